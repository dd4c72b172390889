"""The daemon's trust policy without a broker: which fields are places, and which requests are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from config.settings import DaemonSettings, Settings
from pipeline.daemon.policy import (
    Kind,
    bound_key_problems,
    check_request,
    check_signature,
    check_spec,
    field_kind,
    sign,
)
from pipeline.daemon.policy_fields import NESTED_MAPPINGS, PLAIN_MAPPINGS
from pipeline.daemon.requests import BadRequest, parse_request, resolve_request
from pipeline.registry import components
from task_components.schema.library import MAX_SCHEMA_BYTES, read_schema_file
from task_components.schema.models import SchemaError

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
# Words that, in a field name, say "this names a place or a channel": an independent second opinion on
# field_kind, so a new component's `archive_dir` or `events_topic` cannot go unchecked by the daemon.
PLACE_WORDS = {
    "out",
    "path",
    "dir",
    "root",
    "file",
    "folder",
    "topic",
    "uri",
    "url",
    "ref",
    "config",
    "run",
    "prefix",
    "group",
    "location",
    "dest",
    "target",
    "output_dir",
}


def _mentions_path(annotation: Any) -> bool:
    return annotation is Path or any(_mentions_path(a) for a in typing.get_args(annotation))


def test_every_place_field_of_every_registered_component_is_classified() -> None:
    unclassified = []
    for name, cls in components().items():
        for field, info in cls.Params.model_fields.items():
            looks_like_a_place = _mentions_path(info.annotation) or bool(PLACE_WORDS & set(field.split("_")))
            if looks_like_a_place and field_kind(name, field, info.annotation) in (None, Kind.DURATION):
                unclassified.append(f"{name}.{field}")
    assert not unclassified, f"path/topic-like fields the daemon would not check: {unclassified}"


@pytest.mark.parametrize(
    ("component", "field", "kind"),
    [
        ("partition", "out", Kind.PATH),
        ("storage.upload", "local_root", Kind.PATH),
        ("dataset.load", "path", Kind.READ),
        ("storage.upload", "prefix", Kind.KEY),
        ("testdata.produce", "topic", Kind.TOPIC),
        ("sink.kafka", "topic", Kind.TOPIC),
        ("dataset.events", "dead_letter_topic", Kind.TOPIC),
        ("source.kafka", "group", Kind.TOPIC),
        ("sink.milvus", "uri", Kind.URI),
        ("generate", "schema_ref", Kind.REF),
        ("run.result", "run", Kind.READ),
        ("demo.sleep", "seconds", Kind.DURATION),
        ("dataset.table", "config", Kind.READ),
        ("sink.mongodb", "database", Kind.NAME),
        ("sink.mongodb", "collection", Kind.NAME),
        ("mongo.seed", "database", Kind.NAME),
        ("mongo.seed", "collection", Kind.NAME),
        ("milvus.create_collection", "collection", Kind.NAME),
        ("sink.milvus", "collection", Kind.NAME),
        ("shadow.sync", "table", Kind.NAME),
        ("partition", "rows_per_file", Kind.VALUE),
        ("mongo.seed", "pack", Kind.CODE),
        ("mongo.validate", "pack", Kind.CODE),
        ("testdata.produce", "stop_on_signal", Kind.PROCESS),
        ("quality.check", "config_file", Kind.READ),
        ("dataset.realtime", "config_file", Kind.READ),
    ],
)
def test_known_fields_have_their_kind(component: str, field: str, kind: Kind) -> None:
    params = components()[component].Params
    assert field_kind(component, field, params.model_fields[field].annotation) is kind


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def test_nested_models_and_every_mapping_parameter_are_classified() -> None:
    """Inside a parameter too: a nested model's place-like field is classified, and a mapping parameter is
    either walked key by key (settings like a pack's ``out``) or reviewed as holding no places."""
    unclassified, unreviewed = [], []
    for name, cls in components().items():
        for field, info in cls.Params.model_fields.items():
            for model in _models_in(info.annotation):
                for sub, sinfo in model.model_fields.items():
                    looks = _mentions_path(sinfo.annotation) or bool(PLACE_WORDS & set(sub.split("_")))
                    if looks and field_kind(name, sub, sinfo.annotation) in (None, Kind.DURATION):
                        unclassified.append(f"{name}.{field}.{sub}")
            if "dict" in str(info.annotation) and (name, field) not in NESTED_MAPPINGS | PLAIN_MAPPINGS:
                unreviewed.append(f"{name}.{field}")
    assert not unclassified and not unreviewed, (unclassified, unreviewed)


def test_a_new_components_fields_are_classified_by_annotation_and_name() -> None:
    class NewParams(BaseModel):
        archive: Path
        results_dir: str
        audit_topic: str | None = None
        label: str = "x"

    kinds = {f: field_kind("new.thing", f, i.annotation) for f, i in NewParams.model_fields.items()}
    assert kinds == {"archive": Kind.PATH, "results_dir": Kind.PATH, "audit_topic": Kind.TOPIC, "label": None}


# --- check_request ---------------------------------------------------------------------------------------------
def _settings(**daemon: Any) -> Settings:
    return Settings(daemon=DaemonSettings(**{"inline_specs": True, "pipelines_dir": PIPELINES, **daemon}))


def _check(pipeline: Any, settings: Settings, run_path: Path, **extra: Any) -> None:
    """What the intake does with a message's bytes: parse, check the spec before building, build, check."""
    request = parse_request(json.dumps({"request_id": "r1", "pipeline": pipeline, **extra}).encode(), 1 << 20)

    def precheck(spec: Any, baseline: Any) -> None:
        check_spec(request, spec, baseline, settings, run_path)

    resolved = resolve_request(request, settings.daemon.pipelines_dir, precheck)
    check_request(request, resolved.dag, settings, run_path)


def _inline(uses: str, **with_: Any) -> dict[str, Any]:
    tasks: dict[str, Any] = {"gen": {"uses": "generate", "with": {"schema": "simple", "total_rows": 10}}}
    if uses == "storage.upload":
        tasks["p"] = {"uses": "partition", "needs": ["gen"]}
    tasks["t"] = {"uses": uses, "needs": ["p" if uses == "storage.upload" else "gen"], "with": with_}
    return {"name": "x", "tasks": tasks}


def _refused(word: str, *args: Any, **kw: Any) -> str:
    with pytest.raises(BadRequest) as err:
        _check(*args, **kw)
    assert err.value.kind == "forbidden" and word in str(err.value), str(err.value)
    return str(err.value)


@pytest.fixture
def run_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs" / "r1"
    path.mkdir(parents=True)
    return path


def test_paths_must_stay_inside_the_run_directory_or_a_root(run_path: Path, tmp_path: Path) -> None:
    s = _settings(inline_components=["generate", "partition", "storage.upload"])
    _refused("outside the run directory", _inline("partition", out="/any/path"), s, run_path)
    _refused("outside the run directory", _inline("partition", out="runs/r1/../../../../x"), s, run_path)
    _refused("outside the run directory", _inline("partition", out="runs/other-run/data"), s, run_path)
    _refused("'local_root'", _inline("storage.upload", backend="local", local_root="/any/path"), s, run_path)
    _refused("'prefix'", _inline("storage.upload", backend="local", prefix="../../x"), s, run_path)
    _check(_inline("partition", out=str(run_path / "data")), s, run_path)  # inside: fine
    _check(_inline("partition", out="runs/r1/data"), s, run_path)  # relative to the working directory
    (run_path / "link").symlink_to("/tmp")  # a symlink inside the run directory that leads out of it
    _refused("outside the run directory", _inline("partition", out=str(run_path / "link" / "x")), s, run_path)
    root = tmp_path / "exports"
    _check(_inline("partition", out=str(root / "a")), _settings(inline_components=["generate", "partition"], path_roots=[root]), run_path)


def test_topics_and_the_reply_topic_must_have_an_allowed_prefix(run_path: Path) -> None:
    s = _settings(inline_components=["testdata.produce"], topic_prefixes=["team-a."])
    spec = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"topic": "records-out", "total": 1}}}}
    _refused("TOPIC_PREFIXES", spec, s, run_path)
    spec["tasks"]["t"]["with"]["topic"] = "team-a.records"
    _check(spec, s, run_path)
    _refused("reply_topic", "demo", s, run_path, reply_topic="records-dlq")
    _refused("reply_topic", "demo", _settings(topic_prefixes=["team-a."]), run_path, reply_topic="team-b.replies")
    _check("demo", s, run_path, reply_topic="team-a.replies")
    _refused("dead-letter", "demo", _settings(topic_prefixes=[""]), run_path, reply_topic="pipeline-requests-dlq")


def test_inline_specs_are_off_by_default_and_limited_to_the_allow_list(run_path: Path) -> None:
    nap = {"name": "n", "tasks": {"t": {"uses": "demo.sleep", "with": {"seconds": 0}}}}
    _refused("INLINE_SPECS", nap, _settings(inline_specs=False), run_path)
    _check(nap, _settings(), run_path)  # demo.sleep is on the default allow-list
    produce = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"total": 1}}}}
    _refused("INLINE_COMPONENTS", produce, _settings(), run_path)
    default = DaemonSettings().inline_components
    assert not {"storage.upload", "testdata.produce", "sink.kafka", "sink.mongodb", "mongo.seed"} & set(default)


def test_durations_and_bounds_apply_to_every_request(run_path: Path) -> None:
    s = _settings()
    nap = {"name": "n", "tasks": {"t": {"uses": "demo.sleep", "with": {"seconds": 1e9}}}}
    _refused("DAEMON__PARAM_BOUNDS", nap, s, run_path)
    _refused("MAX_RUN_SECONDS", nap, _settings(param_bounds={}), run_path)
    _refused("'timeout'", {"name": "n", "tasks": {"t": {"uses": "demo.sleep", "timeout": 1e7}}}, s, run_path)
    _refused("DAEMON__PARAM_BOUNDS", "demo", s, run_path, params={"pause": 1e9})  # a named pipeline's ${params}
    _check("demo", s, run_path, params={"pause": 1.0})


# --- review b: nothing a request names is opened before the policy; places inside mappings; topics and names --
SECRET_TEXT = "hunter2-SECRET"


def test_a_file_named_by_a_request_is_never_opened_and_never_quoted(run_path: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim" / "app.yaml"
    victim.parent.mkdir()
    victim.write_text(f'db:\n  password: "{SECRET_TEXT}"\n bad_indent: x\n')
    os.mkfifo(tmp_path / "victim" / "pipe.yaml")  # opening it for reading would block for ever
    s = _settings()
    reasons = [
        _refused("outside the run directory", "quickstart", s, run_path, params={"schema": str(p)})
        for p in (victim, tmp_path / "victim" / "pipe.yaml", tmp_path / "victim" / "missing.yaml")
    ]
    assert all(SECRET_TEXT not in r and "password" not in r for r in reasons), reasons
    # an existing and a missing file get the same answer (no oracle of what exists)
    assert reasons[0].replace("app.yaml", "X") == reasons[2].replace("missing.yaml", "X")
    for device in ("/dev/zero", "/dev/tty"):
        _refused("outside the run directory", "quickstart", s, run_path, params={"schema": device})
    # bare names are built-in or library names only, never a file of that name in the working directory
    (run_path.parent.parent / "mine").write_text(f"fields: [{SECRET_TEXT}]\n")
    _refused("outside the run directory", "quickstart", s, run_path, params={"schema": "mine"})
    _check("quickstart", s, run_path, params={"schema": "simple"})


def test_a_schema_file_a_root_allows_is_read_safely(run_path: Path, tmp_path: Path) -> None:
    """Inside DAEMON__READ_ROOTS the file is read: a bad one is refused naming the place, never its content."""
    root = tmp_path / "schemas"
    root.mkdir()
    (root / "bad.yaml").write_text(f'db:\n  password: "{SECRET_TEXT}"\n bad_indent: x\n')
    with pytest.raises(BadRequest) as err:
        _check("quickstart", _settings(read_roots=[root]), run_path, params={"schema": str(root / "bad.yaml")})
    assert err.value.kind == "bad_spec" and "line 3" in str(err.value) and SECRET_TEXT not in str(err.value)
    os.mkfifo(root / "pipe.yaml")
    big = root / "big.yaml"
    big.write_bytes(b"#" * (MAX_SCHEMA_BYTES + 1))
    for path, word in ((root / "pipe.yaml", "not a regular file"), (Path("/dev/zero"), "not a regular file"), (big, "at most")):
        with pytest.raises(SchemaError, match=word):
            read_schema_file(path)


def test_paths_inside_mappings_and_a_packs_resolved_out_are_checked(run_path: Path, tmp_path: Path) -> None:
    _refused("'overrides.out'", "retail", _settings(), run_path)  # its default out is the working directory
    wide = _settings(path_roots=[PIPELINES])  # the reviewer's deployer: the pack config's dir as a root
    _refused("'overrides.out'", "retail", wide, run_path, params={"out": "/etc/x"})
    # the pipelines dir is readable (the pack config) but not writable
    _refused("'overrides.out'", "retail", _settings(), run_path, params={"out": str(PIPELINES / "x")})
    out = tmp_path / "exports"
    _check("retail", _settings(path_roots=[out]), run_path, params={"out": str(out / "retail")})
    # a pack config file whose own out leads elsewhere (no override): the resolved config is checked
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "retail.yaml").write_text(
        (PIPELINES / "packs" / "retail.yaml").read_text().replace("out: retail_data", f"out: {tmp_path / 'elsewhere'}")
    )
    s = _settings(read_roots=[packs], inline_components=["dataset.table"])
    table = {"uses": "dataset.table", "with": {"pack": "retail", "table": "geographies", "config": str(packs / "retail.yaml")}}
    _refused("config (resolved).out", {"name": "t", "tasks": {"g": table}}, s, run_path)
    table["with"]["config"] = {"out": "/etc/x"}  # an inline config mapping
    _refused("'config.out'", {"name": "t", "tasks": {"g": table}}, s, run_path)


@pytest.mark.parametrize("mode", ["retail_master", "retail_historical", "retail_realtime"])
def test_the_seed_modes_empty_config_and_out_mean_the_packs_own(mode: str, run_path: Path, tmp_path: Path) -> None:
    """'' is what these pipelines pass for "not given": the pack's own settings, whose resolved out is what gets
    checked; it is not the daemon's working directory (which refused every such request)."""
    out = tmp_path / "exports"
    roots = _settings(path_roots=[out], read_roots=[tmp_path / "configs"], topic_prefixes=["retail-"])
    if mode == "retail_realtime":  # past the policy, the pack itself wants history in that out first
        with pytest.raises(BadRequest) as err:
            _check(mode, roots, run_path, params={"out": str(out / "retail")})
        assert err.value.kind == "bad_spec" and "no historical data yet" in str(err.value)
    else:
        _check(mode, roots, run_path, params={"out": str(out / "retail")})  # config '': the pack's defaults
        _refused("retail_data' resolves outside", mode, roots, run_path)  # out '' too: the pack's default out
    _refused("'/etc/retail.json' resolves outside", mode, roots, run_path, params={"out": str(out), "config": "/etc/retail.json"})
    _refused("'/etc/x' resolves outside", mode, roots, run_path, params={"out": "/etc/x"})


def test_the_topics_a_component_falls_back_to_and_the_daemons_own_are_checked(run_path: Path) -> None:
    own = {"inline_components": ["testdata.produce", "source.kafka", "sink.kafka", "sink.dead_letter"]}
    s = _settings(topic_prefixes=["team-a."], **own)
    produce = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"total": 1000}}}}
    _refused("'records-in'", produce, s, run_path)  # no topic named: KAFKA__TOPIC_SOURCE is what it would write
    _refused("'records-", "streaming", _settings(), run_path)  # the shipped pipeline on production topics (in, out)
    wide = _settings(topic_prefixes=["pipeline-", "dag-pipeline", "team-a"], **own)
    for topic in ("pipeline-requests", "pipeline-status", "pipeline-requests-dlq"):
        produce["tasks"]["t"]["with"]["topic"] = topic
        _refused("daemon's own", produce, wide, run_path)
        _refused("daemon's own", "demo", wide, run_path, reply_topic=topic)
    joins = {
        "name": "j",
        "tasks": {  # (in data order: the sinks take the source's stream)
            "s": {"uses": "source.kafka", "with": {"topic": "team-a.in", "group": "dag-pipeline-daemon"}},
            "k": {"uses": "sink.kafka", "needs": ["s"], "with": {"topic": "team-a.out", "key": ["id"]}},
            "d": {"uses": "sink.dead_letter", "needs": ["s", "k"], "with": {"topic": "team-a.dlq"}},
        },
    }
    _refused("'group'", joins, wide, run_path)  # the daemon's own consumer group: it would commit request offsets
    joins["tasks"]["s"]["with"]["group"] = "team-a.group"
    _check(joins, wide, run_path)
    # a prefix matches exactly or at a . - _ boundary
    produce["tasks"]["t"]["with"]["topic"] = "team-ab.x"
    _refused("TOPIC_PREFIXES", produce, wide, run_path)
    produce["tasks"]["t"]["with"]["topic"] = "team-a.x"
    _check(produce, wide, run_path)
    _refused("TOPIC_PREFIXES", "demo", _settings(topic_prefixes=["records"]), run_path, reply_topic="recordsx")


def test_resource_parameters_are_bounded_by_default(run_path: Path) -> None:
    s = _settings(inline_components=[*DaemonSettings().inline_components, "testdata.produce"], topic_prefixes=["team-a."])
    gen = {"name": "g", "tasks": {"g": {"uses": "generate", "with": {"schema": "simple", "total_rows": 10}}}}
    for field, value, word in (
        ("total_rows", 10**15, "PARAM_BOUNDS"),
        ("chunk_rows", 10**9, "PARAM_BOUNDS"),
        ("workers", 10_000, "CPU count"),
        ("workers", 0, "CPU count"),
    ):
        spec = json.loads(json.dumps(gen))
        spec["tasks"]["g"]["with"][field] = value
        _refused(word, spec, s, run_path)
    _refused("'total_rows'", "quickstart", s, run_path, params={"rows": 10**12})
    produce = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"topic": "team-a.x", "total": 10**12}}}}
    _refused("'total'", produce, s, run_path)
    _refused("'scale'", "mongo_ecommerce", s, run_path, params={"scale": 1e6})
    _check("quickstart", s, run_path, params={"rows": 1000})
    assert bound_key_problems(DaemonSettings()) == []  # every default bound names a real field
    assert bound_key_problems(DaemonSettings(param_bounds={"generate.total_row": 5})) == ["generate.total_row"]


def test_a_request_may_not_choose_a_database_or_collection(run_path: Path) -> None:
    _check("mongo_ecommerce", _settings(), run_path)  # the pipeline file's own database
    _check("mongo_ecommerce", _settings(), run_path, params={"database": "shop", "scale": 0.5})  # its value again
    for db in ("admin", "shop2"):
        reason = _refused("'database'", "mongo_ecommerce", _settings(), run_path, params={"database": db})
        assert "NAME_PREFIXES" in reason
    _check("mongo_ecommerce", _settings(name_prefixes=["team_a"]), run_path, params={"database": "team_a_shop"})
    _refused("'database'", "mongo_ecommerce", _settings(name_prefixes=["team_a"]), run_path, params={"database": "team_ab"})


# --- signing ---------------------------------------------------------------------------------------------------
def test_signature_is_required_only_with_a_secret_must_match_and_expires() -> None:
    value = b'{"request_id": "r1", "pipeline": "demo"}'
    check_signature(value, [], None)
    with pytest.raises(BadRequest, match="unsigned"):
        check_signature(value, [], "s3cret")
    with pytest.raises(BadRequest, match="bad signature"):
        check_signature(value, sign("other", value), "s3cret")
    with pytest.raises(BadRequest, match="bad signature"):
        check_signature(value + b" ", sign("s3cret", value), "s3cret")
    check_signature(value, sign("s3cret", value), "s3cret")
    old = sign("s3cret", value, signed_at=int(time.time()) - 3600)  # a captured request sent again an hour later
    with pytest.raises(BadRequest, match=r"expired signature.*SIGNATURE_MAX_AGE"):
        check_signature(value, old, "s3cret", max_age=300)
    moved = [(k, b"9999999999" if k == "x-signed-at" else v) for k, v in old]  # its time changed: no longer signed
    with pytest.raises(BadRequest, match="bad signature"):
        check_signature(value, moved, "s3cret", max_age=300)


# --- configuration -----------------------------------------------------------------------------------------------
def _daemon(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DAEMON__", "KAFKA__"))}
    return subprocess.run(
        [sys.executable, "run_pipeline.py", "daemon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, "KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", **env},
        timeout=120,
    )


def test_an_unknown_inline_component_or_a_bad_bound_is_a_configuration_error() -> None:
    cases = [
        ({"DAEMON__INLINE_COMPONENTS": '["demo.sleep", "os.system"]'}, ["INLINE_COMPONENTS", "os.system"]),
        ({"DAEMON__PARAM_BOUNDS": '{"seconds": 5}'}, ["DAEMON__PARAM_BOUNDS", "COMPONENT.FIELD"]),
        ({"DAEMON__PARAM_BOUNDS": '{"demo.sleep.secs": 5}'}, ["PARAM_BOUNDS", "demo.sleep.secs"]),
    ]
    for env, words in cases:
        proc = _daemon(env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert all(w in proc.stderr for w in words), proc.stderr[-2000:]


def test_a_request_may_name_only_a_built_in_pack_never_a_module_or_file(run_path: Path, tmp_path: Path) -> None:
    s = _settings(inline_components=["mongo.seed"], name_prefixes=["users"])
    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('imported')\n")

    def seed(pack: str) -> dict[str, Any]:
        return {"name": "s", "tasks": {"t": {"uses": "mongo.seed", "with": {"pack": pack, "collection": "users"}}}}

    for pack in (str(evil), f"{evil}:PACK", "os:system", "tests.unit.conftest:X", "../evil.py"):
        _refused("built-in", seed(pack), s, run_path)
    _check(seed("ecommerce"), s, run_path)


def test_a_request_may_not_let_a_run_take_the_daemons_signals(run_path: Path) -> None:
    s = _settings(inline_components=["testdata.produce"], topic_prefixes=["team-a."])
    spec = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"topic": "team-a.x", "total": 1, "stop_on_signal": True}}}}
    _refused("SIGTERM", spec, s, run_path)
    spec["tasks"]["t"]["with"]["stop_on_signal"] = False
    _check(spec, s, run_path)
