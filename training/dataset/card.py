"""The dataset card (card.json and README.md) and the version folder that holds it."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from training.collect import Collected
from training.config import RetrainConfig

if TYPE_CHECKING:
    from training.dataset.plan import _Plan
from training.dataset.schema import SPLITS, class_weights, data_files
from training.dataset.state import _write_state

State = Literal["built", "loaded", "pruned"]


def _write_readme(vdir: Path, state: State) -> None:
    """(Re)write a version's README from its card.json, atomically."""
    card = json.loads((vdir / "card.json").read_text())
    tmp = vdir / ".README.md.tmp"
    tmp.write_text(_readme(card, state))
    tmp.replace(vdir / "README.md")


def _iso(ts: float | None) -> str | None:
    if ts is None or math.isnan(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _card(
    version: str, previous: str | None, shards: list[str], collected: Collected, written: dict[str, Any], plan: _Plan, config: RetrainConfig
) -> dict[str, Any]:
    m = plan.summary  # counted by the plan: no pass over the rows here
    d_train, u_train, d_all, u_all = m["d_train"], m["u_train"], m["desirable"], m["undesirable"]
    dw, uw = class_weights(d_train, u_train) if d_train and u_train else class_weights(d_all, u_all)
    s = plan.stats
    return {
        "version": version,
        "previous": previous,
        "created_at": _iso(time.time()),
        "shards": shards,
        "source": {"since_event": collected.since, "watermark": collected.watermark, "full": collected.full, "new_events": collected.new_events},
        "this_build": {**written, "skipped_malformed": len(collected.skipped)},
        "counts": {
            "kto_train": m["kto"] - m["kto_test"],
            "kto_test": m["kto_test"],
            "dpo_train": int((~plan.dpo_test).sum()),
            "dpo_test": int(plan.dpo_test.sum()),
            "desirable": d_all,
            "undesirable": u_all,
            "threads": s["threads"],
            "test_threads": s["test_threads"],
            "users": s["users"],
        },
        "weights": {
            "desirable_weight": dw,
            "undesirable_weight": uw,
            "computed_on": "kto_train" if d_train and u_train else "all rows",
            "ratio_range": [1, 4 / 3],
        },
        "dropped": {
            "superseded": s["superseded"],
            "forgotten": s["forgotten"],
            "duplicates": s["duplicates"],
            "over_user_cap": s["capped"],
            "contradictory_pairs": s["contradictory_pairs"],
        },
        "user_cap": {"max_user_share": config.max_user_share, "cap_rows_per_user": s["user_cap"], "capped_users": s["capped_users"]},
        "split": {"by": "thread", "split_seed": config.split_seed, "test_fraction": config.test_fraction},
        "pii": {"scrubbed": config.scrub_pii, "replaced": dict(m["pii"])},
        "time_range": {
            "rated_from": _iso(m["rated_at_min"]),
            "rated_to": _iso(m["rated_at_max"]),
            "answered_from": _iso(m["created_at_min"]),
            "answered_to": _iso(m["created_at_max"]),
        },
        "prompt_versions": dict(m["prompt_version"]),
        "model_versions": dict(m["model_version"]),
    }


def _summary(card: dict[str, Any]) -> str:
    c, d, w = card["counts"], card["dropped"], card["weights"]
    pii_text = ", ".join(f"{n} {k}" for k, n in sorted(card["pii"]["replaced"].items())) or "none"
    return (
        f"Dataset {card['version']}: KTO {c['kto_train']} train / {c['kto_test']} test "
        f"({c['desirable']} up, {c['undesirable']} down), "
        f"{'DPO pairs ' + str(c['dpo_train']) + ' train / ' + str(c['dpo_test']) + ' test' if c['dpo_train'] + c['dpo_test'] else 'no DPO pairs yet'}, "
        f"{c['users']} users, {c['threads']} threads\n"
        f"  this build: {card['this_build']['rated']} rated exchanges read, {card['this_build']['forgotten']} forgotten\n"
        f"  left out: {d['duplicates']} duplicates, {d['over_user_cap']} over the per-user cap "
        f"({card['user_cap']['cap_rows_per_user']} rows/user), {d['superseded']} superseded by newer ratings, "
        f"{d['forgotten']} unrated or deleted, {d['contradictory_pairs']} pairs with the same answer both ways\n"
        f"  PII replaced: {pii_text}; KTO weights: desirable {w['desirable_weight']}, undesirable {w['undesirable_weight']}"
    )


def _trl_flags(card: dict[str, Any]) -> str:
    w = card["weights"]
    return f"--desirable_weight {w['desirable_weight']} --undesirable_weight {w['undesirable_weight']}"


def _front_matter(card: dict[str, Any], state: State) -> str:
    """The README's YAML header, as the Hugging Face `datasets` library and the Hub read it: one
    config per method with its non-empty splits (so `load_dataset(folder, "kto")` never merges
    KTO and DPO rows, whose columns differ, and never meets an empty file), and the KTO class
    weights with the TRL flags that apply them. The configs only while their parquet files exist
    (state "loaded"): before `load` writes them, or once pruned, a config would name missing files."""
    w = card["weights"]
    configs = [
        {"config_name": name, "data_files": [{"split": split, "path": path} for split, path in files.items()]}
        for name, files in data_files(card["counts"]).items()
    ]
    meta: dict[str, Any] = {
        **({"configs": configs} if state == "loaded" else {}),
        "tags": ["trl", "kto", "dpo", "preference"],
        "kto_class_weights": {
            "desirable_weight": w["desirable_weight"],
            "undesirable_weight": w["undesirable_weight"],
            "computed_on": w["computed_on"],
            "trl_flags": _trl_flags(card),
        },
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _readme(card: dict[str, Any], state: State = "loaded") -> str:
    """The README of a version: "built" (its parquet files not written yet: `load` writes them and
    this README again), "loaded" (the files and the configs naming them) or "pruned" (its data
    deleted by `chatbot dataset prune`: the counts stay, no config)."""
    c, d, tr = card["counts"], card["dropped"], card["time_range"]
    configs = data_files(c)

    def rows(split: str) -> str:
        if c[split]:
            return str(c[split])
        return "0 (no pairs yet)" if split.startswith("dpo") else "0 (none in this split)"

    loading = [
        "## Loading",
        "",
        "The parquet files under `parquet/` are the configs of the header above "
        f"({'; '.join(f'`{n}`: ' + ', '.join(files) for n, files in configs.items()) or 'none: no rows'}; a split with no rows has no file):",
        "",
        "```python",
        "from datasets import load_dataset",
        *[f'{n} = load_dataset("path/to/{card["version"]}", "{n}")' for n in configs],
        "```",
        "",
        "```sh",
        *(
            [f"trl kto --dataset_name path/to/{card['version']} --dataset_config kto {_trl_flags(card)} --model_name_or_path ... --output_dir ..."]
            if "kto" in configs
            else []
        ),
        *([f"trl dpo --dataset_name path/to/{card['version']} --dataset_config dpo --model_name_or_path ... --output_dir ..."] if "dpo" in configs else []),
        "```",
        *(
            ["", "No DPO pairs yet: the `dpo` config appears once two answers to one prompt are rated both ways."]
            if "dpo" not in configs
            else ([] if "test" in configs["dpo"] else ["", "No held-out DPO pairs yet: the `dpo` config has a train split only."])
        ),
    ]
    if state == "built":
        loading = [
            "## Loading",
            "",
            "Not materialized yet: the parquet files under `parquet/`, and the header's configs naming them, are written the",
            "first time the version is loaded (the retraining run loads it right after building it).",
        ]
    elif state == "pruned":
        loading = []  # said at the top
    lines = [
        _front_matter(card, state),
        f"# Preference dataset {card['version']}" + (" (pruned)" if state == "pruned" else ""),
        "",
        *(
            ["Pruned by `chatbot dataset prune`: its rows and parquet files are deleted, so it has no configs to load; this card",
             "and `card.json` say what it held.", ""]
            if state == "pruned"
            else []
        ),
        "Rated answers of the chat assistant, for TRL: KTO rows (`prompt`, `completion`, `label`) for every",
        "rated answer, DPO rows (`prompt`, `chosen`, `rejected`) for real pairs: two answers to identical",
        "prompt messages (a regenerated answer, or the same prompt in another thread of the same split) rated",
        "up and down, each answer in at most one pair. An edited question is a different prompt, so its answers",
        "stay KTO rows only. Built on "
        f"{card['created_at']} from {'all ratings' if card['previous'] is None else 'version ' + card['previous'] + ' and the ratings since'}.",
        "",
        "| split | rows |",
        "|---|---:|",
        *[f"| {s} | {rows(s)} |" for s in SPLITS],
        "",
        f"- Ratings: {c['desirable']} up, {c['undesirable']} down, from {c['users']} users in {c['threads']} threads; "
        f"rated {tr['rated_from']} to {tr['rated_to']}, answered {tr['answered_from']} to {tr['answered_to']}.",
        f"- Prompt versions: {', '.join(f'{k} ({v})' for k, v in sorted(card['prompt_versions'].items())) or 'none'}.",
        f"- Model versions: {', '.join(f'{k} ({v})' for k, v in sorted(card['model_versions'].items())) or 'none'}.",
        f"- KTO weights: `desirable_weight={card['weights']['desirable_weight']}`, `undesirable_weight={card['weights']['undesirable_weight']}` "
        "(weighted desirable:undesirable within TRL's recommended 1 to 4/3); pass them to TRL as "
        f"`{_trl_flags(card)}`.",
        f"- Split by thread (`split_seed={card['split']['split_seed']}`, test share {card['split']['test_fraction']}): "
        f"{c['test_threads']} of {c['threads']} threads held out; a thread never straddles the splits.",
        "- `kto_train` rows are shuffled (seeded by the version id, so the same every time): TRL's KTO trainer reads",
        "  them in order and pairs each answer with its neighbours' prompts for its KL term.",
        "",
        *loading,
        "",
        "Over-long rows: this project's retraining drops the rows longer than its `max_length` tokens, and counts them. "
        "Plain TRL (as of 1.16) keeps them and truncates each prompt plus answer to `--max_length` tokens (default 1024), "
        "keeping the start (KTO always; DPO with `truncation_mode=keep_start`, its only supported mode), so a long answer "
        "loses its end; it drops only the rows whose prompt alone fills `max_length`.",
        "",
        "## Left out",
        "",
        f"- {d['superseded']} older ratings of re-rated answers (the last rating wins);",
        f"- {d['forgotten']} answers unrated or deleted with their thread;",
        f"- {d['duplicates']} duplicates (same prompt, answer and rating);",
        f"- {d['over_user_cap']} ratings over the per-user cap of {card['user_cap']['cap_rows_per_user']} rows "
        f"({card['user_cap']['capped_users']} users capped, max share {card['user_cap']['max_user_share']}; their newest kept);",
        f"- {d['contradictory_pairs']} candidate pairs whose two answers were the same text rated both ways.",
        "",
        "## Personal data",
        "",
        (
            "Emails, phone numbers, payment card numbers, street addresses and public IP addresses in prompts and answers "
            f"were replaced by placeholders before anything was written: {', '.join(f'{n} {k}' for k, n in sorted(card['pii']['replaced'].items())) or 'none found'} "
            "(counted per row: a message repeated in a thread's later prompts counts again). System messages (the operator's "
            "prompt spec) are kept as served. Names and free-form addresses are not detected; rating comments are not stored. "
            "The `user` column holds login names."
            if card["pii"]["scrubbed"]
            else "PII scrubbing was OFF for this version: texts are as users typed them."
        ),
        "",
    ]
    return "\n".join(lines)


def _write_version(root: Path, version: str, shards: list[str], previous: str | None, plan: _Plan, card: dict[str, Any], config: RetrainConfig) -> None:
    tmp = root / f".{version}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text(json.dumps({"version": version, "previous": previous, "shards": shards}, indent=2))
    _write_state(tmp, plan, config)  # the plan: 2 bytes a row, no encoding (load reads it)
    (tmp / "card.json").write_text(json.dumps(card, indent=2))
    (tmp / "README.md").write_text(_readme(card, "built"))  # `load` rewrites it once the parquet files exist
    tmp.replace(root / version)
