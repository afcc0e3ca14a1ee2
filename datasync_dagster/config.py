"""The configuration: pydantic models read from one YAML file, with errors that name the entry."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from datasync_dagster.errors import ConfigError

Tier = Literal["mass", "daily", "hourly"]
SourceSystem = Literal["jde", "cms", "generic"]
TIERS: tuple[Tier, ...] = ("mass", "daily", "hourly")

CONFIG_ENV = "DATASYNC_CONFIG"
DEMO_CONFIG = Path(__file__).parent / "demo" / "datasync.yaml"

_ASSET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Rows per batch at most: a batch is held in memory whole, by the fetcher and by the writer.
MAX_BATCH_SIZE = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TierSettings(_Model):
    """When a tier runs and how stale its tables may become before they count as late."""

    cron: str
    interval: timedelta
    grace: timedelta

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(
                f"cron `{value}` needs five fields: minute hour day-of-month month day-of-week, "
                "e.g. `5 * * * *` for five past every hour"
            )
        return value

    @field_validator("interval", mode="wrap")
    @classmethod
    def _positive_interval(cls, value: Any, parse: ValidatorFunctionWrapHandler) -> timedelta:
        interval: timedelta = parse(value)
        if interval <= timedelta(0):
            raise ValueError(
                f"interval `{value}` must be longer than zero; use a duration such as PT1H or P1D"
            )
        return interval

    @field_validator("grace", mode="wrap")
    @classmethod
    def _grace_not_negative(cls, value: Any, parse: ValidatorFunctionWrapHandler) -> timedelta:
        grace: timedelta = parse(value)
        if grace < timedelta(0):
            raise ValueError(
                f"grace `{value}` must not be negative; use PT0S for none, or e.g. PT30M"
            )
        return grace


class TierOptions(_Model):
    # Each interval is its schedule's period and some time for the sync to run: with the bare
    # period, a table would read Degraded for the length of every sync that ends a little
    # later than the one before it.
    mass: TierSettings = TierSettings(
        cron="0 2 * * 0", interval=timedelta(days=7, hours=12), grace=timedelta(days=1)
    )
    daily: TierSettings = TierSettings(
        cron="0 3 * * *", interval=timedelta(hours=26), grace=timedelta(hours=6)
    )
    hourly: TierSettings = TierSettings(
        cron="0 * * * *", interval=timedelta(hours=1, minutes=15), grace=timedelta(minutes=30)
    )

    def of(self, tier: Tier) -> TierSettings:
        settings: TierSettings = getattr(self, tier)
        return settings


class DataSyncOptions(_Model):
    """Settings that apply to every table."""

    # Measured with the benchmark: 20,000 rows a batch syncs as fast as 50,000, in about 65 MB
    # less memory.
    batch_size: int = 20_000
    max_parallel_syncs: Annotated[int, Field(gt=0)] = 4
    max_parallel_per_source: Annotated[int, Field(gt=0)] = 2
    timezone: str = "UTC"
    tiers: TierOptions = TierOptions()

    @field_validator("batch_size")
    @classmethod
    def _batch_size_in_range(cls, value: int) -> int:
        allowed = f"use 1 to {MAX_BATCH_SIZE:,} rows, e.g. 20,000"
        if value < 1:
            raise ValueError(f"batch_size `{value}` must be at least 1; {allowed}")
        if value > MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size `{value}` is too large: a batch is held in memory whole, and past "
                f"{MAX_BATCH_SIZE:,} rows it costs memory and no longer saves time; {allowed}"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone `{value}`; use an IANA name such as UTC") from e
        return value


class _Connection(_Model):
    """A database reached by a literal URL without a password, or by an environment variable."""

    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> _Connection:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of `url` and `url_env`")
        if self.url is not None:
            try:
                parsed = make_url(self.url)
            except ArgumentError as e:
                raise ValueError(f"`url` is not an SQLAlchemy URL: {e}") from e
            if parsed.password is not None or _password_in_query(parsed.query):
                shown = parsed.render_as_string(hide_password=True)
                raise ValueError(
                    f"`url` `{shown}` holds a password; put the URL in an environment variable "
                    "and name it with `url_env`"
                )
        return self

    def resolve_url(self) -> str:
        """The SQLAlchemy URL, read from the environment where the configuration says so."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        value = os.environ.get(self.url_env, "")
        if not value:
            raise ConfigError(
                f"environment variable `{self.url_env}` is not set; "
                "set it to the SQLAlchemy URL of the database"
            )
        return value


def _password_in_query(query: Any) -> bool:
    """Whether URL parameters carry a password: `password=`, or `PWD=` in `odbc_connect`."""
    for key, value in query.items():
        values = value if isinstance(value, tuple) else (value,)
        if key.lower() in ("password", "pwd"):
            return True
        if key.lower() == "odbc_connect" and any("pwd=" in v.lower() for v in values):
            return True
    return False


class DataSourceConfig(_Connection):
    """A source system of record."""

    name: str
    system: SourceSystem = "generic"
    schema_: str | None = Field(default=None, alias="schema")
    fetch_size: Annotated[int, Field(gt=0)] = 10_000
    trim_strings: bool | None = None

    @property
    def trims_strings(self) -> bool:
        """JDE and CMS pad CHAR columns with spaces, so their strings are trimmed by default."""
        if self.trim_strings is not None:
            return self.trim_strings
        return self.system in ("jde", "cms")


class CacheConfig(_Connection):
    """The local cache database, which also holds the `DataUpdate` audit table."""

    url: str | None = "sqlite:///data/cache.sqlite"
    schema_: str | None = Field(default=None, alias="schema")
    # JDE values are decoded in the cache's SQL where its dialect can (PostgreSQL, SQLite);
    # false decodes them in Python, as on SQL Server: slower, the same values.
    decode_in_sql: bool = True

    @model_validator(mode="before")
    @classmethod
    def _env_replaces_default_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url_env") and "url" not in data:
            return {**data, "url": None}
        return data


class JulianDate(_Model):
    """A JDE date stored as the integer CYYDDD; 0 means no date."""

    kind: Literal["julian_date"]


class HhmmssTime(_Model):
    """A JDE time of day stored as the integer HHMMSS."""

    kind: Literal["time"]


class ImpliedDecimal(_Model):
    """An amount stored as an integer with `decimals` implied decimal places."""

    kind: Literal["implied_decimal"]
    decimals: Annotated[int, Field(ge=0, le=18)]


class Trim(_Model):
    """A CHAR value padded with trailing spaces."""

    kind: Literal["trim"]


class Timestamp(_Model):
    """A new column joining a Julian date column and an HHMMSS time column into one timestamp."""

    kind: Literal["timestamp"]
    date: str
    time: str


ColumnRule = Annotated[
    JulianDate | HhmmssTime | ImpliedDecimal | Trim | Timestamp, Field(discriminator="kind")
]


class TableConfig(_Model):
    """One synced table: where it comes from, how it is keyed and decoded, and its tier."""

    name: str
    source: str
    source_table: str
    cache_table: str | None = None
    key_columns: Annotated[list[str], Field(min_length=1)]
    columns: list[str] | None = None
    tier: Tier = "daily"
    watermark: list[str] = []
    # How far before the last watermark reached an incremental sync starts reading, to catch
    # rows committed late with an earlier watermark; None starts at the watermark itself.
    lookback: timedelta | None = None
    decode: dict[str, ColumnRule] = {}
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _asset_name(cls, value: str) -> str:
        if not _ASSET_NAME.match(value):
            raise ValueError(
                f"`{value}` is not a valid asset name; use letters, digits and underscores"
            )
        return value

    @field_validator("lookback", mode="wrap")
    @classmethod
    def _positive_lookback(
        cls, value: Any, parse: ValidatorFunctionWrapHandler
    ) -> timedelta | None:
        lookback: timedelta | None = parse(value)
        if lookback is not None and lookback <= timedelta(0):
            raise ValueError(
                f"lookback `{value}` must be longer than zero; use a duration such as PT2H or "
                "P1D, or leave `lookback` out to read from the watermark itself"
            )
        return lookback

    @field_validator("decode", mode="before")
    @classmethod
    def _shorthand_rules(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"kind": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _columns_agree(self) -> TableConfig:
        if self.tier != "mass" and not self.watermark:
            raise ValueError(
                f"tier `{self.tier}` reads incrementally and needs `watermark` columns "
                "(for JDE, the date and time updated); or make the table tier `mass`"
            )
        if self.lookback is not None and not self.watermark:
            raise ValueError(
                "`lookback` moves the watermark back, but the table has no `watermark` "
                "columns; add `watermark` columns or remove `lookback`"
            )
        derived = {name for name, rule in self.decode.items() if isinstance(rule, Timestamp)}
        if self.columns is not None:
            listed = set(self.columns)
            needed = {
                "key_columns": self.key_columns,
                "watermark": self.watermark,
                "decode": [name for name in self.decode if name not in derived],
            }
            for field, names in needed.items():
                missing = [name for name in names if name not in listed]
                if missing:
                    raise ValueError(
                        f"{field} names {missing}, which `columns` leaves out; "
                        "add them to `columns` or drop `columns` to sync them all"
                    )
        for name, rule in self.decode.items():
            if isinstance(rule, Timestamp) and name in (self.columns or ()):
                raise ValueError(f"timestamp `{name}` is a new column and must not be in `columns`")
        return self

    @property
    def cache_table_name(self) -> str:
        return self.cache_table or self.source_table


class DataSyncConfig(_Model):
    """The whole configuration file."""

    options: DataSyncOptions = DataSyncOptions()
    cache: CacheConfig = CacheConfig()
    sources: Annotated[list[DataSourceConfig], Field(min_length=1)]
    tables: Annotated[list[TableConfig], Field(min_length=1)]

    def source(self, name: str) -> DataSourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named `{name}`; the sources are {self.source_names}")

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        names = [t.name for t in self.tables]
        raise ConfigError(f"no table named `{name}`; the tables are {names}")

    @property
    def source_names(self) -> list[str]:
        return [source.name for source in self.sources]


def config_path() -> Path:
    """The configuration file in use: `DATASYNC_CONFIG`, or the demo configuration."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else DEMO_CONFIG


def load_config(path: Path | str | None = None, *, check_env: bool = True) -> DataSyncConfig:
    """Read and validate a configuration file.

    Args:
        path: the YAML file; `DATASYNC_CONFIG` or the demo configuration when omitted.
        check_env: also require every `url_env` variable to be set.

    Raises:
        ConfigError: naming the file, the entry and the fix.
    """
    path = Path(path) if path is not None else config_path()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the configuration ({e.strerror}); "
            f"point {CONFIG_ENV} at a readable file"
        ) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax there: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `sources` and `tables`")

    try:
        config = DataSyncConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e, data)}") from e

    problems = _cross_check(config, check_env=check_env)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return config


def _cross_check(config: DataSyncConfig, *, check_env: bool) -> list[str]:
    problems = []
    seen: set[str] = set()
    for kind, names in (
        ("source", config.source_names),
        ("table", [t.name for t in config.tables]),
    ):
        seen.clear()
        for name in names:
            if name in seen:
                problems.append(f"{kind} `{name}` is named twice; give each {kind} its own name")
            seen.add(name)
    cache_tables: dict[str, str] = {}
    for table in config.tables:
        if table.source not in config.source_names:
            problems.append(
                f"table `{table.name}`: unknown source `{table.source}`; "
                f"use one of {config.source_names}"
            )
        other = cache_tables.setdefault(table.cache_table_name.lower(), table.name)
        if other != table.name:
            problems.append(
                f"tables `{other}` and `{table.name}` both write cache table "
                f"`{table.cache_table_name}`; set `cache_table` on one of them"
            )
    if check_env:
        for entry, connection in [("cache", config.cache)] + [
            (f"source `{s.name}`", s) for s in config.sources
        ]:
            if connection.url_env and not os.environ.get(connection.url_env):
                problems.append(
                    f"{entry}: environment variable `{connection.url_env}` is not set; "
                    "set it to the SQLAlchemy URL"
                )
    return problems


def _describe(error: ValidationError, data: dict[str, Any]) -> str:
    """Turn pydantic's errors into entries named by their `name`, not only their index."""
    parts: list[str] = []
    for item in error.errors():
        where: list[str] = []
        node: Any = data
        for step in item["loc"]:
            node = _child(node, step)
            if isinstance(step, int) and isinstance(node, dict) and "name" in node:
                where[-1] = f"{where[-1]}[{step}] (`{node['name']}`)"
            elif isinstance(step, int):
                where[-1] = f"{where[-1]}[{step}]"
            else:
                where.append(str(step))
        parts.append(f"{'.'.join(where) or 'top level'}: {_message(item)}")
    return "; ".join(parts)


def _message(item: Any) -> str:
    """Pydantic's message of one error, with the fix where pydantic leaves it unsaid."""
    message = str(item["msg"]).removeprefix("Value error, ")
    field = item["loc"][-1] if item["loc"] else None
    kind = item["type"]
    if kind == "missing":
        return f"`{field}` is missing; add it"
    if kind == "extra_forbidden":
        return f"`{field}` is not a known setting; remove it or correct its spelling"
    if kind in ("literal_error", "enum"):
        expected = item.get("ctx", {}).get("expected")
        return f"`{item['input']}` is not allowed; use {expected}" if expected else message
    if kind == "union_tag_invalid":
        ctx = item["ctx"]
        return f"`{ctx['tag']}` is not a known {ctx['discriminator']}; use {ctx['expected_tags']}"
    if kind == "too_short":
        return f"{message}; list at least one"
    if kind in ("time_delta_parsing", "time_delta_type"):
        return _not_a_duration(field, item["input"])
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"`{field}` is `{item['input']}`; use a whole number"
    if kind == "greater_than":
        return f"`{field}` is `{item['input']}`; use a number greater than {item['ctx']['gt']}"
    return message


def _not_a_duration(field: Any, given: Any) -> str:
    value = "empty" if given in (None, "") else f"`{given}`, which is not a duration"
    return (
        f"`{field}` is {value}; write an ISO 8601 duration such as PT30M, PT1H, P1D or P7D, "
        "or a number of seconds"
    )


def _child(node: Any, step: int | str) -> Any:
    """The entry at `step` of a mapping or list read from the YAML, or None."""
    if isinstance(node, dict):
        return node.get(step)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return None
