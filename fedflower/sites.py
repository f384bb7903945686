"""A client's name in per-client results: its site name, data file or partition id.

The server and the clients name a node the same way: a deployed SuperNode by its node
config's ``site-name`` (``flower-supernode --node-config "site-name='st-marys'"``) or its
data file's stem (``site-3.csv`` -> ``site-3``), a virtual SuperNode by its partition id.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from fedflower import keys


def site_name(node_config: Mapping[str, Any], node_id: int) -> str:
    """The name a node's rows carry in ``per_client.jsonl``.

    Parameters
    ----------
    node_config : mapping
        The node's config (Flower's ``Context.node_config``).
    node_id : int
        The node's id, the name of last resort.
    """
    if keys.SITE_NAME in node_config:
        return str(node_config[keys.SITE_NAME])
    if keys.DATA_PATH in node_config:
        return PurePath(str(node_config[keys.DATA_PATH])).stem
    if keys.PARTITION_ID in node_config:
        return str(int(node_config[keys.PARTITION_ID]))
    return str(node_id)
