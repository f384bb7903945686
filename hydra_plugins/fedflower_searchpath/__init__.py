"""Hydra search-path plugin: configs shipped by fedflower strategy plugins.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts. This one
adds, after fedflower's own configs, the config package of every installed strategy plugin
that registers one in the ``fedflower.conf`` entry-point group (see
:func:`fedflower.server.registry.config_search_paths`), so ``fedflower strategy=<name>`` finds the
plugin's ``conf/strategy/<name>.yaml``, and registers the dataclasses that type fedflower's
config groups in Hydra's ``ConfigStore``. It changes nothing for other Hydra applications.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

FEDFLOWER_CONF = "pkg://fedflower.conf"


class FedflowerPluginConfigs(SearchPathPlugin):
    """Append the config packages of installed fedflower plugins to fedflower's search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add ``pkg://<plugin config package>`` for each plugin (only for fedflower's app)."""
        if not any(element.path == FEDFLOWER_CONF for element in search_path.get_path()):
            return
        from fedflower import model_options
        from fedflower.client import options as client_options
        from fedflower.data import options as data_options
        from fedflower.server import options as server_options
        from fedflower.server.registry import config_search_paths

        client_options.register()  # the typed schemas of fedflower's config groups
        server_options.register()
        model_options.register()
        data_options.register()
        for provider, path in config_search_paths():
            search_path.append(provider=provider, path=path)
