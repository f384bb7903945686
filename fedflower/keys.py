"""Message, record and config keys shared by the server and the clients.

Every string that crosses the wire is named here once, so a typo is an import error
instead of a silently missing value.
"""

# Records inside a Message's RecordDict (Flower's defaults for its strategies).
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# MetricRecord keys.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
EVAL_LOSS = "eval_loss"
EVAL_ACCURACY = "eval_accuracy"

# ConfigRecord keys sent by the server each round.
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "lr"
PROXIMAL_MU = "proximal-mu"
RETURN_UPDATE = "return-update"  # reply with the update ``w_global - w_local`` (fedsgd)
STRAGGLER = "straggler"  # this client was made a straggler this round (fewer local epochs)
UNIT_WEIGHT = "unit-weight"  # under SecAgg+: report weight 1 (the secure sum is then unweighted)

# Node config keys (Flower's simulation engine sets these for every virtual SuperNode).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

# Node config keys a deployed SuperNode may set (``flower-supernode --node-config``).
DATA_PATH = "data-path"
LABEL_COLUMN = "label-column"
NUM_CLASSES = "num-classes"

# Run config keys of the Flower app (``[tool.flwr.app.config]``, ``flwr run --run-config``).
RUN_OVERRIDES = "overrides"
RUN_OUTPUT_DIR = "output-dir"
