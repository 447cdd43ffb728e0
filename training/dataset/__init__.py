"""Step 2 of the retraining job: turn collected ratings into a versioned preference dataset.

Layout under `root` (the job passes `<DATA_DIR>/datasets`)::

    shards/<version>.parquet   the rows one build collected (PII already scrubbed), plus
                               tombstones for the exchanges it was told to forget; never changed
    shards/<version>.plan.arrow  its sidecar: the plan columns, uncompressed, with each grouping
                               key sorted (no text; derived from the shard, rewritten if missing)
    <version>/manifest.json    the shards this version is made of: the previous version's + its own
    <version>/plan_state/      the plan, one .npy file per array: per shard row (in shard order) its
                               fate (left out by which rule, or a KTO row) and split, the DPO pairs
                               as row numbers with their sort keys, per-user and per-thread counts
    <version>/plan_state.json  the plan's settings, stats and the card's counts (what the next
                               incremental build updates and `load` reads)
    <version>/card.json        machine-readable card: counts, weights, coverage, what was dropped
    <version>/README.md        the same for people, with a Hugging Face YAML header: configs kto and
                               dpo (their train/test parquet files) and the KTO class weights, so
                               `load_dataset(<version folder>, "kto")` and `trl kto --dataset_name`
                               read the folder as it is (the configs are written by `load`, with the
                               files they name; a pruned version's README says so and has none)
    <version>/data/            DatasetDict (save_to_disk): kto_train, kto_test, dpo_train, dpo_test
    <version>/parquet/         the splits with rows as parquet files (an empty one has none; kto_train
                               shuffled, seeded by the version id)              (data/ and parquet/
                               are written by `load`, the first time the version is loaded)

What each step costs (N: rows in all of a version's shards, n: rows this build collected):

- build, O(n): read the collected rows from Redis, scrub PII, hash, write them as one shard.
  All of the per-row Python work (text scanning, parsing, serialization) is here.
- build, incremental: the plan is the previous version's plan updated where the new rows' keys
  land (plan.py `_plan_update`, applying the full plan's rule functions): the exchanges they
  re-rate or forget, the duplicate groups rows join or leave, the users whose rows changed (all of a user's rows only when the user is over the old
  or the new per-user cap), the threads and the DPO prompt groups whose KTO rows changed; each
  found by a binary search of every shard's sorted sidecar runs. The card's counts are the
  previous version's plus the difference. What still grows with N is memory copies: the
  previous plan state (2 bytes a row) copied, extended and written as .npy files, about 0.015
  CPU-second per million rows (0.13 when every build planned over all rows).
- build, full (no previous version, or one without a plan state, other plan settings, or tiny
  data needing the split's thread move): O(N) but narrow, vectorized and sort-free. It
  memory-maps the shards' sidecars (fixed-width columns: 64-bit keys and hashes, label, times)
  and works out in numpy, without Python per row, which rows survive (newest row per exchange,
  tombstones, duplicates, per-user cap), the split and the DPO pairs. The rows it groups by a key
  come sorted from the sidecars: the earlier shards' big sorted run is merged with the few rows
  since (binary search, one copy), so no build sorts all rows again; each step then finds the
  repeated keys in one pass and works on those rows only. The new shard's sidecar costs
  O(n log n) once.
- load, O(N): materializes the DatasetDict and parquet files from the shards, streaming one row
  group at a time, the first time a version is loaded. Training reads every row anyway.

Full rebuilds (collected.full) start from no shards. Old versions and their shards stay on disk
until `chatbot dataset prune` (training/retention.py) removes them; a user's deleted thread is
absent from every version built after the deletion, and from the disk after a full rebuild and a
prune.

Modules, in the order a build uses them::

    version.py      DatasetVersion, DatasetError, a version's files (manifest, shard paths)
    schema.py       Arrow schemas, split names, KTO class weights
    hashes.py       64-bit keys of texts and ids
    shard.py        the new shard: collected rows scrubbed and hashed, tombstones
    index.py        each shard's sorted sidecar, and the columns of all shards read through them
    plan.py         which rows survive, the split, the DPO pairs (full or incremental)
    state.py        the plan on disk, for the next build and for load
    card.py         card.json, README.md and the version folder
    builder.py      build(): the steps above, atomically
    materialize.py  load(): the DatasetDict, materialized once from the shards
    hub.py          push(): the materialized folder uploaded to a Hub dataset repo (--push-to-hub)
"""

from training.dataset.builder import build
from training.dataset.materialize import load
from training.dataset.plan import thread_scores, user_cap
from training.dataset.schema import PLAN_COLUMNS, SPLITS, class_weights
from training.dataset.version import DatasetError, DatasetVersion

__all__ = ["PLAN_COLUMNS", "SPLITS", "DatasetError", "DatasetVersion", "build", "class_weights", "load", "thread_scores", "user_cap"]
