"""``standardize``: field mapping -> type conversion -> standardization, per record, for a stream.

The component only validates its configuration and returns a ``StandardizeStage`` (a picklable
description); ``source.kafka`` asks it for a processor and runs it on every batch. Errors are collected
per record (the record is rejected with the step, the field and the reason, and goes to the dead-letter
topic); nothing here raises for a batch: an operation that fails on a value in a way nobody foresaw
(``TypeError``, ``OverflowError``...) rejects that record with the exception as the reason.
Its settings may come in part from a ``config_file``, reloaded while the stream runs when it changes
(task_components/streaming/reload.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from task_components.contracts import BatchStage, StreamBatch
from task_components.standardization.convert import CONVERTERS, DEFAULT_DATE_FORMATS, ConversionError, to_iso_utc
from task_components.standardization.countries import COUNTRY_ALIASES
from task_components.standardization.normalize import OPERATIONS, normalize_phone
from task_components.streaming.detached import checkpoint
from task_components.streaming.reload import ReloadableParams
from task_components.streaming.steps import StreamStage

__all__ = ["Standardize", "StandardizeParams", "StandardizeStage"]

TypeName = Literal["int", "float", "bool", "str", "datetime"]


def _unforeseen(exc: Exception) -> str:
    return f"cannot process this value: {type(exc).__name__}: {str(exc)[:200]}"


class StandardizeParams(ReloadableParams):
    model_config = ConfigDict(extra="forbid")

    mapping: dict[str, str] = Field(default_factory=dict, description="source field -> target field (renames)")
    drop_unmapped: bool = Field(False, description="keep only the fields named in mapping's targets")
    types: dict[str, TypeName] = Field(default_factory=dict, description="target field -> int|float|bool|str|datetime")
    fields: dict[str, list[str]] = Field(
        default_factory=dict,
        description=f"target field -> standardizations in order, of: {', '.join(OPERATIONS)}",
    )
    default_country_code: str = Field("1", pattern=r"^[1-9][0-9]{0,2}$", description="for national phone numbers")
    date_formats: list[str] = Field(default_factory=lambda: list(DEFAULT_DATE_FORMATS))
    country_aliases: dict[str, str] = Field(default_factory=dict, description="extra name -> ISO alpha-2 code")

    @field_validator("fields")
    @classmethod
    def _known_operations(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, ops in value.items():
            unknown = [op for op in ops if op not in OPERATIONS]
            if unknown:
                known = ", ".join(OPERATIONS)
                raise ValueError(f"field {name!r}: unknown standardization {unknown[0]!r} (known: {known})")
        return value

    @field_validator("country_aliases")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [code for code in value.values() if not re.fullmatch(r"[A-Z]{2}", code)]
        if bad:
            raise ValueError(f"country_aliases must map to ISO alpha-2 codes (got {bad[0]!r})")
        return value


@dataclass(frozen=True, slots=True)
class StandardizeStage(BatchStage):
    params: StandardizeParams
    step = "standardization"

    def operations(self) -> dict[str, Callable[[Any], Any]]:
        p = self.params
        aliases = {**COUNTRY_ALIASES, **{k.lower(): v for k, v in p.country_aliases.items()}}

        def country(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, str):
                raise ConversionError(f"country needs text, got {type(value).__name__}")
            code = aliases.get(" ".join(value.split()).lower().replace(".", ""))
            if code is None:
                raise ConversionError(f"{value!r} is not a known country (ISO 3166 code or name)")
            return code

        return {
            **OPERATIONS,
            "phone": partial(normalize_phone, default_country_code=p.default_country_code),
            "date": partial(to_iso_utc, formats=p.date_formats),
            "country": country,
        }

    def processor(self) -> Callable[[StreamBatch], None]:
        p = self.params
        ops = self.operations()
        converters = {
            name: partial(to_iso_utc, formats=p.date_formats) if kind == "datetime" else CONVERTERS[kind] for name, kind in p.types.items()
        }
        steps = {name: [(op, ops[op]) for op in names] for name, names in p.fields.items()}
        targets = set(p.mapping.values())

        def process(batch: StreamBatch) -> None:
            for record in batch.records:
                checkpoint()  # a cancelled run stops here, between records
                if record.rejection is not None or record.value is None:
                    continue
                value = {p.mapping.get(k, k): v for k, v in record.value.items()}
                if p.drop_unmapped:
                    value = {k: v for k, v in value.items() if k in targets}
                record.value = value
                for name, convert in converters.items():
                    try:
                        value[name] = convert(value.get(name))
                    except ConversionError as exc:
                        record.reject("conversion", name, str(exc))
                        break
                    except Exception as exc:  # noqa: BLE001 - one record's value, never the batch's failure
                        record.reject("conversion", name, _unforeseen(exc))
                        break
                if record.rejection is not None:
                    continue
                for name, chain in steps.items():
                    for op, fn in chain:
                        try:
                            value[name] = fn(value.get(name))
                        except ConversionError as exc:
                            record.reject("standardization", f"{name}.{op}", str(exc))
                            break
                        except Exception as exc:  # noqa: BLE001 - one record's value, never the batch's failure
                            record.reject("standardization", f"{name}.{op}", _unforeseen(exc))
                            break
                    if record.rejection is not None:
                        break

        return process


class Standardize(StreamStage[StandardizeParams]):
    __slots__ = ()
    component = "standardize"
    summary = "streaming stage: field mapping, type conversion, standardization (per-record errors)"
    Params = StandardizeParams

    def stage(self) -> StandardizeStage:
        return StandardizeStage(self.params.effective())

    def stage_for(self, params: StandardizeParams) -> StandardizeStage:
        return StandardizeStage(params)
