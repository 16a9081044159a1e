"""Combine the results of the shards of one replay into one directory and summary."""

from __future__ import annotations

from pathlib import Path

from burstpilot.errors import BurstpilotError
from burstpilot.slo import SLO

from . import records as rec_io
from .export import DEFAULT_PERCENTILES
from .metrics import summarize
from .runner import RUN_META, SUMMARY, ReplayOptions, write_results


def merge(
    dirs: list[Path],
    out_dir: Path,
    slo: SLO | None = None,
    plot: bool = True,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    report: bool = True,
) -> dict:
    """Merge shard output directories into ``out_dir`` (Parquet, summary, vLLM JSON, CSV, plot, report).

    The shards must come from one workload (same fingerprint and shard count) and hold disjoint rows.
    ``slo`` defaults to the one the shards were run with.
    """
    if not dirs:
        raise BurstpilotError("replay merge: give at least one shard directory")
    metas = []
    for d in dirs:
        path = Path(d) / RUN_META
        if not path.is_file():
            raise BurstpilotError(f"{path}: missing (not a replay output directory?)")
        metas.append(rec_io.read_json(path))
    fingerprints = {m.get("fingerprint") for m in metas}
    if len(fingerprints) != 1:
        raise BurstpilotError(
            f"replay merge: the directories replayed different workloads ({sorted(map(str, fingerprints))})"
        )
    shards = [str(m.get("shard", "0/1")) for m in metas]
    if len(set(shards)) != len(shards):
        raise BurstpilotError(f"replay merge: a shard appears twice ({', '.join(shards)})")
    if len({s.split("/")[-1] for s in shards}) != 1:
        raise BurstpilotError(f"replay merge: shards of different splits ({', '.join(shards)})")
    records = [r for d in dirs for r in rec_io.read_records(Path(d))]
    seen: set[int] = set()
    for r in records:
        if r["index"] in seen:
            raise BurstpilotError(f"replay merge: request {r['index']} appears in more than one shard")
        seen.add(r["index"])
    records.sort(key=lambda r: r["index"])
    if slo is None:
        slo = SLO.from_dict(metas[0].get("options", {}).get("slo"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec_io.write_parquet(records, out_dir / rec_io.PARQUET_NAME)
    n_shards = int(shards[0].split("/")[1])
    summary = summarize(records, slo, scheduled=sum(m.get("shard_requests", 0) for m in metas))
    summary["shards"] = sorted(shards, key=lambda s: int(s.split("/")[0]))
    summary["missing_shards"] = [
        f"{i}/{n_shards}" for i in range(n_shards) if f"{i}/{n_shards}" not in shards
    ]
    summary["interrupted"] = any(
        rec_io.read_json(Path(d) / SUMMARY).get("interrupted", False)
        if (Path(d) / SUMMARY).is_file()
        else True
        for d in dirs
    )
    summary["model"] = metas[0].get("model")
    meta = {
        **{k: v for k, v in metas[0].items() if k not in ("shard", "shard_requests", "targets", "host")},
        "shard": "merged " + ", ".join(summary["shards"]),
        "shard_requests": summary["requests"]["scheduled"],
        "targets": sorted({t for m in metas for t in m.get("targets", [])}),
        "merged_from": [str(d) for d in dirs],
    }
    rec_io.atomic_write_json(meta, out_dir / RUN_META)
    options = ReplayOptions(slo=slo, plot=plot, report=report, percentiles=percentiles)
    write_results(out_dir, records, summary, meta, options)
    return summary
