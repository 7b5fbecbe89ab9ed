"""Summaries of lake data (pure functions over polars frames): volume, cars, failure modes."""

from __future__ import annotations

from typing import Any

import polars as pl

from fleet.contract import FAILURE_MODES


def with_time_parts(frame: pl.DataFrame) -> pl.DataFrame:
    ts = pl.from_epoch(pl.col("event_time"), time_unit="ms")
    return frame.with_columns(ts.dt.strftime("%Y-%m-%d").alias("date"), ts.dt.hour().alias("hour"))


def events_per_hour(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        with_time_parts(frame)
        .group_by("date", "hour")
        .agg(pl.len().alias("events"), pl.col("car_id").n_unique().alias("cars"))
        .sort("date", "hour")
    )


def events_per_day(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        with_time_parts(frame)
        .group_by("date")
        .agg(pl.len().alias("events"), pl.col("car_id").n_unique().alias("cars"))
        .sort("date")
    )


def failure_incidence(frame: pl.DataFrame) -> pl.DataFrame:
    """Per failure mode: events labelled with it, their share of labelled events, cars affected.

    Events without labels (not from the simulator) are left out of the shares.
    """
    labelled = frame.filter(pl.col("failure_occurred").is_not_null())
    total = labelled.height
    modes = (
        labelled.select("car_id", pl.col("failure_modes").fill_null([]))
        .explode("failure_modes")
        .drop_nulls("failure_modes")
        .group_by("failure_modes")
        .agg(pl.len().alias("events"), pl.col("car_id").n_unique().alias("cars"))
        .rename({"failure_modes": "mode"})
    )
    known = pl.DataFrame({"mode": ["any", *FAILURE_MODES]})
    anything = labelled.filter(pl.col("failure_occurred"))
    any_row = pl.DataFrame(
        {
            "mode": ["any"],
            "events": [anything.height],
            "cars": [anything["car_id"].n_unique()],
        },
        schema={"mode": pl.String, "events": pl.UInt32, "cars": pl.UInt32},
    )
    counts = pl.concat([any_row, modes.cast({"events": pl.UInt32, "cars": pl.UInt32})])
    out = known.join(counts, on="mode", how="full", coalesce=True).fill_null(0)
    return out.with_columns(
        (pl.col("events") / total if total else pl.lit(0.0)).alias("share_of_events")
    )


def summary(frame: pl.DataFrame) -> dict[str, Any]:
    return {
        "events": frame.height,
        "cars": frame["car_id"].n_unique() if frame.height else 0,
        "first_event_time": frame["event_time"].min() if frame.height else None,
        "last_event_time": frame["event_time"].max() if frame.height else None,
    }
