"""Label and annotation keys of datasweep objects."""

ARTIFACT = "datasweep.io/artifact"
FINGERPRINT = "datasweep.io/fingerprint"  # the short fingerprint: label values stop at 63 characters
STAGE = "datasweep.io/stage"
DATASET = "datasweep.io/dataset"
BATCH = "datasweep.io/batch"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MANAGED_BY = "app.kubernetes.io/managed-by"
IMPORTED = "datasweep.io/imported"  # registered by `datasweep import`: data exists, no Job ever runs

FULL_FINGERPRINT = "datasweep.io/fingerprint-sha256"
FIRST_BATCH = "datasweep.io/first-batch"
FIRST_EXPERIMENT = "datasweep.io/first-experiment"
PARALLELISM = "datasweep.io/parallelism"
QUEUE = "datasweep.io/queue-name"
RETRY = "datasweep.io/retry"
REGENERATE = "datasweep.io/regenerate"
NUDGED = "datasweep.io/nudged"  # an input or a slot freed up: look again
FAILED_ATTEMPT = "datasweep.io/failed-attempt"  # the last failed attempt, wakes the retry with backoff
LEGACY_FINGERPRINT = "datasweep.io/legacy-fingerprint"  # the seed tools' 12-hex MD5, kept by `datasweep import`
