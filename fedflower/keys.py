"""Message, record and config keys shared by the server and the clients.

Every string that crosses the wire is named here once, so a typo is an import error
instead of a silently missing value.
"""

# Records inside a Message's RecordDict (Flower's defaults for its strategies).
ARRAYS = "arrays"
ARRAY_NAMES = "array-names"  # legacy FitIns config (SecAgg+): variable paths, a line each
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

# Simulated attacks (simulation only, see fedflower.client.attacks).
ATTACK = "attack"  # ConfigRecord a malicious client's train reply carries (its attack's name)
ATTACK_NAME = "name"
FLIP_LABELS = "attack-flip-labels"  # train config: train on flipped labels (label_flip attack)
# Compression (see fedflower.client.compression): a ConfigRecord named COMPRESSION travels with
# every server -> client message carrying a model when compression is on, and with the replies.
COMPRESSION = "compression"
COMPRESS_UP = "up"  # codec of the client's update
COMPRESS_DOWN = "down"  # codec the message's model arrays are encoded with
COMPRESS_FRACTION = "fraction"
COMPRESS_PER_CHANNEL = "per-channel"
COMPRESS_STOCHASTIC = "stochastic"
COMPRESS_MIN_ELEMENTS = "min-elements"
COMPRESS_VALUE_DTYPE = "value-dtype"
COMPRESS_FEEDBACK = "error-feedback"
COMPRESS_SEED = "seed"  # the run seed: stochastic rounding is seeded by (seed, round, node)
COMPRESS_BASE = "base"  # a reply's arrays are the update from the received model ("received")
COMPRESS_RESIDUAL = "compression-residual"  # error-feedback residual in the client's Context.state

# Node config key of a deployed SuperNode in a run with ``attack.in_deployment=true``.
MALICIOUS = "malicious"  # true: the node runs the run's attack; false: it never does

# Per-client evaluation (see fedflower.server.per_client). A reply's metrics of a model other
# than the global one carry its name as a prefix: ``personal_eval_accuracy``, ``local_eval_loss``.
SITE_NAME = "site-name"  # node config: the site's name in per-client results
REPORT_CLIENT = "report-client"  # evaluate config: the server cannot name nodes, reply with a name
CLIENT_INFO = "client"  # ConfigRecord of an evaluate reply naming its client (when asked)
CLIENT_NAME = "name"
MODEL_GLOBAL = "global"
MODEL_PERSONAL = "personal"
MODEL_LOCAL = "local"
PERSONAL_STATE = "personal-model"  # Context.state ArrayRecord: local layers or Ditto's model
START = "start"  # ArrayRecord of a train task: start from these weights (proximal to ARRAYS)
# FedDyn (see fedflower.client.dynamic).
FEDDYN_ALPHA = "feddyn-alpha"  # train config: alpha of FedDyn's dynamic regularizer
FEDDYN_STATE = "feddyn-gradient"  # Context.state ArrayRecord: the client's g_i
LINEAR = "linear"  # ArrayRecord of a train task: coefficients of the linear term -<g, w>
FINETUNE_CONFIG = "finetune-config"  # Context.state ConfigRecord: the last train settings
FINETUNE_EPOCHS = "finetune-epochs"  # evaluate config: fine-tune this many epochs first
FROZEN = "frozen"  # train config: positions of the weights not trained this task (FedRep)
# SCAFFOLD (see fedflower.client.scaffold).
CONTROL = "control"  # ArrayRecord of a SCAFFOLD train task: the server's control variate c
CONTROL_DELTA = "control-delta"  # ArrayRecord of its reply: the client's c_i+ - c_i
SCAFFOLD_STATE = "scaffold-control"  # Context.state ArrayRecord: the client's control variate
# Federated statistics of a table (see fedflower.server.preprocessing): query messages before
# training. The query's ConfigRecord CONFIG names its KIND; a reply to the STATISTICS kind
# carries ArrayRecord STATISTICS and ConfigRecord CATEGORIES; the PREPROCESSING kind hands the
# fitted preprocessing to the nodes, which keep it in Context.state under PREPROCESSING.
QUERY_KIND = "kind"
STATISTICS = "statistics"
CATEGORIES = "categories"
PREPROCESSING = "preprocessing"
COLUMNS = "columns"  # JSON of the table's columns (names, roles, class names)
FITTED = "fitted"  # JSON of the fitted preprocessing
BOUNDS = "bounds"  # ArrayRecord of the query: per numeric column, the clip bound
NOISE_MULTIPLIER = "noise-multiplier"  # std of the statistics' noise per unit of sensitivity
NOISE_SEED = "noise-seed"
