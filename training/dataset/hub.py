"""Upload a materialized dataset version to a Hugging Face Hub dataset repo (`--push-to-hub`).

The version folder is already a Hub dataset: its README's YAML header names one config per method
(`kto`, `dpo`) and their parquet files. So the upload is that folder as it is, in one commit:
README.md, card.json and parquet/, the previous version's parquet files deleted in the same
commit (a split that became empty must not linger). `DatasetDict.push_to_hub` of the four splits
at once cannot work (KTO and DPO rows have different columns); two pushes with `config_name` would
be two commits, the repo half updated if the second failed. The Hub address comes from
huggingface_hub's own settings (HF_ENDPOINT, HF_TOKEN).
"""

from __future__ import annotations

from pathlib import Path

UPLOADED = ["README.md", "card.json", "parquet/*.parquet"]


def push(root: Path, version: str, repo_id: str) -> str:
    """Upload version `version` (materialized by `load`) to the private dataset repo `repo_id`,
    created if missing; returns the commit's URL. Raises huggingface_hub's errors."""
    from huggingface_hub import HfApi

    vdir = root / version
    if not (vdir / "README.md").is_file() or not (vdir / "parquet").is_dir():
        raise FileNotFoundError(f"dataset version {version} is not materialized under {root}: load it first")
    api = HfApi()
    # Private: the rows are PII-scrubbed (when scrub_pii is on) but carry login names.
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, repo_type="dataset", folder_path=vdir, allow_patterns=UPLOADED, delete_patterns=["parquet/*"],
        commit_message=f"Dataset version {version}",
    )  # fmt: skip
    return str(info.commit_url)
