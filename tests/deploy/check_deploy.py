#!/usr/bin/env python3
"""Checks of the deployment files: Dockerfile, docker-compose.yml, the runtime
configs, .env.example, deploy/prometheus, deploy/kubernetes, deploy/healthcheck,
and who may use Redis and the gateway (passwords, NetworkPolicy, caller keys,
no committed password). Runs `sh` on the entrypoint and Redis start scripts,
with stand-ins for spin and redis-server.

    python3 tests/deploy/check_deploy.py

Needs Python 3.11+ (tomllib) and PyYAML. Runs `promtool` (Debian package
`prometheus`) and `cargo` when they are on PATH; when CI=true their absence is a
failure, otherwise a skip. Exits 1 if any check fails; the last line reads
`deploy checks: N passed, M failed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - reported as a plain failure
    print("FAIL  PyYAML is missing: pip install pyyaml")
    print("deploy checks: 0 passed, 1 failed")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"

SPIN_IMAGE = "ghcr.io/spinframework/spin:v4.0.2"
# ENTRYPOINT of that image (Spin's .github/Dockerfile at v4.0.2), used when the
# Dockerfile does not set its own.
SPIN_IMAGE_ENTRYPOINT = ["/usr/local/bin/spin"]
CONTAINER_LISTEN = "0.0.0.0:8001"
DEFAULT_PUBLISH = "10.1.0.12:8001:8001"
MEMORY_LIMIT = 2 * 1024**3
SERVICE = "ximilar-gw"
RUNTIME_CONFIGS = ["runtime-config.toml", "runtime-config.redis.toml"]
# The two key-value labels (src/runtime/stores.rs). In Redis, the cache may be evicted
# and the counters never, and maxmemory-policy is per server: two servers.
CACHE_LABEL, METRICS_LABEL = "cache", "metrics"
CACHE_POLICIES = {"allkeys-lru", "allkeys-lfu"}  # entries have no Redis TTL: volatile-* would evict nothing
CARD_VARIABLES = ["XIMILAR_API_TOKEN", "XIMILAR_COLLECTION_ID", "XIMILAR_API_URL", "HOST", "PORT", "WORKERS"]

# ---------------------------------------------------------------------------
# What Spin v4.0.2 accepts in a runtime config file, read from its source (tag v4.0.2):
#   crates/runtime-config/src/lib.rs        top-level keys it reads (state_dir, log_dir,
#       max_instance_memory, and each factor's table); validate_all_keys_used makes any
#       other top-level key a start-up error. Key-value store types it registers.
#   crates/runtime-config/src/variables.rs  variables_provider (old name config_provider)
#   crates/variables-{env,vault,azure,static}/src/lib.rs        provider fields
#   crates/key-value-{spin,redis,azure,aws}/src/lib.rs          key-value store fields
#   crates/sqlite/src/lib.rs                sqlite_database types and fields
#   crates/factor-llm/src/spin.rs           llm_compute
#   crates/factor-outbound-http/src/runtime_config/spin.rs        outbound_http
#   crates/factor-outbound-networking/src/runtime_config/spin.rs  outbound_networking, client_tls
# Spin refuses unknown fields in most of these tables, but silently ignores them in a
# key_value_store entry (a misspelt `url` or `path` goes unnoticed there); this check
# refuses them everywhere.
# Each type maps to (required fields, optional fields), `type` itself excluded.
VARIABLE_PROVIDERS = {
    "env": (set(), {"prefix", "dotenv_path"}),
    "vault": ({"url", "token", "mount"}, {"prefix"}),
    "azure_key_vault": ({"vault_url"}, {"client_id", "client_secret", "tenant_id", "authority_host"}),
    "static": ({"values"}, set()),
}
KEY_VALUE_STORES = {
    "spin": (set(), {"path"}),
    "redis": ({"url"}, set()),
    "azure_cosmos": ({"account", "database", "container"}, {"key"}),
    "aws_dynamo": ({"region", "table"}, {"access_key", "secret_key", "token", "consistent_read"}),
}
SQLITE_DATABASES = {
    "spin": (set(), {"path", "allow_attach_file"}),
    "libsql": ({"url", "token"}, set()),
}
LLM_COMPUTE = {
    "spin": (set(), set()),
    "remote_http": ({"url", "auth_token"}, {"api_type"}),
}
PLAIN_TABLES = {
    "outbound_http": (set(), {"connection_pooling", "max_concurrent_requests"}),
    "outbound_networking": (set(), {"block_networks"}),
}
CLIENT_TLS = (
    {"component_ids", "hosts"},
    {"ca_use_platform_roots", "ca_use_webpki_roots", "ca_roots_file", "client_cert_file", "client_private_key_file"},
)
TOP_LEVEL_SCALARS = {"state_dir": str, "log_dir": str, "max_instance_memory": int}
TOP_LEVEL_KEYS = set(TOP_LEVEL_SCALARS) | {
    "variables_provider", "config_provider", "key_value_store", "sqlite_database",
    "llm_compute", "client_tls", *PLAIN_TABLES,
}
# The store Spin always defines, whatever the runtime config says.
IMPLICIT_KEY_VALUE_LABELS = {"default"}


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def expect(condition: object, message: str) -> None:
    if not condition:
        raise Failure(message)


CHECKS: list[tuple[str, object]] = []


def check(name: str):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


# ----------------------------------------------------------------------------- loading

_cache: dict[str, object] = {}


def read(rel: str) -> str:
    path = ROOT / rel
    expect(path.is_file(), f"{rel} is missing")
    return path.read_text(encoding="utf-8")


def load_toml(rel: str) -> dict:
    key = "toml:" + rel
    if key not in _cache:
        try:
            _cache[key] = tomllib.loads(read(rel))
        except tomllib.TOMLDecodeError as e:
            raise Failure(f"{rel} is not valid TOML: {e}")
    return _cache[key]


def load_yaml_docs(rel: str) -> list:
    key = "yaml:" + rel
    if key not in _cache:
        try:
            _cache[key] = [d for d in yaml.safe_load_all(read(rel)) if d is not None]
        except yaml.YAMLError as e:
            raise Failure(f"{rel} is not valid YAML: {e}")
    return _cache[key]


def load_yaml(rel: str):
    docs = load_yaml_docs(rel)
    expect(len(docs) == 1, f"{rel}: expected one YAML document, found {len(docs)}")
    return docs[0]


def manifest() -> dict:
    return load_toml("spin.toml")


def manifest_variables() -> dict:
    variables = manifest().get("variables", {})
    expect(variables, "spin.toml has no [variables]")
    return variables


def manifest_components() -> dict:
    components = manifest().get("component", {})
    expect(components, "spin.toml has no components")
    return components


def manifest_kv_labels() -> set[str]:
    return {label for c in manifest_components().values() for label in c.get("key_value_stores", [])}


def manifest_sqlite_labels() -> set[str]:
    return {label for c in manifest_components().values() for label in c.get("sqlite_databases", [])}


# ----------------------------------------------------------------------------- compose

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alt}, ${VAR:?err}, $VAR, $$,
    nested (${A:-${B:?err}}) as compose-go nests them: only the branch taken is substituted."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    return _substitute(value, env)


def _substitute(text: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$")
            i += 2
        elif text[i + 1] == "{":
            depth, j = 0, i + 1
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            expect(j < len(text), f"unterminated ${{ in {text!r}")
            out.append(_braced(text[i + 2:j], env))
            i = j + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(0), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _braced(body: str, env: dict[str, str]) -> str:
    m = _NAME.match(body)
    expect(m, f"invalid interpolation ${{{body}}}")
    name, rest = m.group(0), body[m.end():]
    current = env.get(name)
    if not rest:
        return current or ""
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    expect(op, f"invalid interpolation ${{{body}}}")
    arg = rest[len(op):]
    if op == ":-":
        return current if current else _substitute(arg, env)
    if op == "-":
        return current if current is not None else _substitute(arg, env)
    if op == ":+":
        return _substitute(arg, env) if current else ""
    if op == "+":
        return _substitute(arg, env) if current is not None else ""
    if (op == ":?" and not current) or (op == "?" and current is None):
        raise Failure(f"compose needs ${{{name}}}: {_substitute(arg, env)}")
    return current


def compose(env: dict[str, str] | None = None) -> dict:
    doc = load_yaml("docker-compose.yml")
    expect(isinstance(doc, dict) and isinstance(doc.get("services"), dict), "docker-compose.yml has no services")
    return interpolate(doc, env or {})


def gateway(env: dict[str, str] | None = None) -> dict:
    services = compose(env)["services"]
    expect(SERVICE in services, f"docker-compose.yml has no service {SERVICE!r}")
    return services[SERVICE]


def memory_bytes(value) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", str(value).lower())
    expect(m, f"unreadable memory size {value!r}")
    return int(float(m.group(1)) * 1024 ** "bkmg".index(m.group(2) or "b"))


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) for each published port."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port.get("published", "")), str(port.get("target", ""))))
            continue
        spec = str(port).split("/")[0]
        if spec.startswith("["):  # [ipv6]:host:container
            ip, _, rest = spec[1:].partition("]:")
            host_port, _, container = rest.partition(":")
        else:
            parts = spec.split(":")
            if len(parts) == 3:
                ip, host_port, container = parts
            elif len(parts) == 2:
                ip, (host_port, container) = "", parts
            else:
                ip, host_port, container = "", "", parts[0]
        out.append((ip, host_port, container))
    return out


def gateway_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append((str(entry.get("source", "")), str(entry.get("target", ""))))
        else:
            source, _, rest = str(entry).partition(":")
            out.append((source, rest.split(":")[0]))
    return out


def env_files(service: dict) -> list[str]:
    value = service.get("env_file", [])
    items = value if isinstance(value, list) else [value]
    return [i["path"] if isinstance(i, dict) else str(i) for i in items]


def option_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1:]
    return None


@check("compose: service ximilar-gw keeps the card's container settings")
def _compose_service():
    svc = gateway()
    expect(svc.get("build") in (".", {"context": "."}), f"build should be '.', is {svc.get('build')!r}")
    expect(svc.get("container_name") == SERVICE, f"container_name should be {SERVICE!r}")
    expect(svc.get("restart") == "unless-stopped", f"restart should be unless-stopped, is {svc.get('restart')!r}")
    expect(env_files(svc) == [".env"], f"env_file should be .env, is {env_files(svc)}")


@check("compose: publishes 10.1.0.12:8001 by default, overridable by XGW_BIND/XGW_PORT")
def _compose_ports():
    default = published_ports(gateway())
    expect(len(default) == 1, f"expected one published port, found {default}")
    expect(":".join(default[0]) == DEFAULT_PUBLISH, f"default publish is {':'.join(default[0])!r}, want {DEFAULT_PUBLISH!r}")
    moved = published_ports(gateway({"XGW_BIND": "127.0.0.1", "XGW_PORT": "18001"}))
    expect(":".join(moved[0]) == "127.0.0.1:18001:8001", f"XGW_BIND/XGW_PORT do not move the port: {moved}")
    for ip, _, _ in default + moved:
        expect(ip not in ("", "0.0.0.0", "::"), "a port is published on every interface")


@check("compose: 2G memory limit")
def _compose_memory():
    limit = gateway().get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    expect(limit is not None, "deploy.resources.limits.memory is not set")
    expect(memory_bytes(limit) == MEMORY_LIMIT, f"memory limit is {limit!r}, want 2G")


@check("compose: a named volume holds the state directory the image and runtime config use")
def _compose_state_volume():
    doc, svc = compose(), gateway()
    state_dir = dockerfile_state_dir()
    named = set((doc.get("volumes") or {}).keys())
    sources = [s for s, t in gateway_mounts(svc) if t.rstrip("/") == state_dir]
    expect(sources, f"no volume is mounted at {state_dir}")
    expect(sources[0] in named, f"{sources[0]!r} mounted at {state_dir} is not a named volume of the file")
    # runtime-config.toml's SQLite files must land inside it (key-value paths are relative
    # to the runtime config file, database paths to the directory spin up runs in; both
    # are the working directory here).
    workdir = final_workdir()
    for kind in ("key_value_store", "sqlite_database"):
        for label, store in load_toml("runtime-config.toml").get(kind, {}).items():
            if store.get("type") == "spin" and "path" in store:
                path = PurePosixPath(workdir, store["path"])
                expect(str(path).startswith(state_dir + "/"), f"{kind}.{label} at {path} is outside the volume")


@check("compose: optional redis service under profile 'redis', matching runtime-config.redis.toml")
def _compose_redis():
    services = compose()["services"]
    redis = {name: s for name, s in services.items() if "redis" in (s.get("profiles") or [])}
    expect(redis, "no service has the profile 'redis'")
    expect(not (gateway().get("profiles")), "the gateway itself must not be behind a profile")
    for name, svc in redis.items():
        expect(str(svc.get("image", "")).startswith("redis:"), f"service {name!r} is not a Redis image")
    depends = gateway().get("depends_on") or {}
    if isinstance(depends, dict):
        for name in redis:
            if name in depends:
                expect(depends[name].get("required") is False, f"depends_on {name!r} must be required: false (profile off)")
    else:
        expect(not set(depends) & set(redis), "a plain depends_on on a profiled service stops the default setup")
    for label, store in load_toml("runtime-config.redis.toml").get("key_value_store", {}).items():
        url = urlsplit(store.get("url", ""))
        expect(url.hostname in redis and (url.port or 6379) == 6379, f"key_value_store.{label} url {store.get('url')!r} is not the redis service")


def redis_server_options(argv) -> dict[str, str]:
    """`--name value...` options of a redis-server command line, e.g. {"maxmemory-policy": "noeviction"}."""
    if isinstance(argv, str):
        argv = shlex.split(argv)
    argv = [str(a) for a in (argv or [])]
    options: dict[str, str] = {}
    name = None
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].lower()
            options[name] = ""
        elif name is not None:
            options[name] = (options[name] + " " + arg).strip() if options[name] else arg
    return options


def redis_store_urls() -> dict[str, tuple[str, int]]:
    """(host, port) of the cache and metrics stores of runtime-config.redis.toml."""
    stores = load_toml("runtime-config.redis.toml").get("key_value_store", {})
    out = {}
    for label in (CACHE_LABEL, METRICS_LABEL):
        expect(label in manifest_kv_labels(), f"spin.toml no longer uses a {label!r} store; update this check")
        url = urlsplit(stores.get(label, {}).get("url", ""))
        expect(url.hostname, f"key_value_store.{label} has no Redis host")
        out[label] = (url.hostname, url.port or 6379)
    return out


def check_redis_roles(where: str, cache: dict[str, str], metrics: dict[str, str]) -> None:
    """The cache's Redis evicts (allkeys-*, with a maxmemory) and persists; the counters' never evicts."""
    policy = cache.get("maxmemory-policy", "noeviction")
    expect(policy in CACHE_POLICIES, f"{where}: the cache's Redis has maxmemory-policy {policy!r}, want one of {sorted(CACHE_POLICIES)}")
    expect(memory_bytes(cache.get("maxmemory", "0") or "0") > 0, f"{where}: the cache's Redis has no --maxmemory, so it never evicts")
    persisted = cache.get("save", "").strip() not in ("", '""') or cache.get("appendonly", "no").lower() == "yes"
    expect(persisted, f"{where}: the cache's Redis keeps nothing on disk (--save or --appendonly yes), so paid answers die with it")
    policy = metrics.get("maxmemory-policy", "noeviction")  # Redis's default
    expect(policy == "noeviction", f"{where}: the counters' Redis has maxmemory-policy {policy!r}: it may evict counters")


@check("compose: redis profile runs the cache's Redis (allkeys-lru, persisted on a volume) and the counters' (noeviction)")
def _compose_redis_roles():
    services = compose()["services"]
    urls = redis_store_urls()
    svc = {}
    for label, (host, _) in urls.items():
        expect(host in services, f"key_value_store.{label}: no compose service {host!r}")
        svc[label] = services[host]
    expect(urls[CACHE_LABEL][0] != urls[METRICS_LABEL][0], f"cache and metrics both use the service {urls[CACHE_LABEL][0]!r}")
    options = {label: redis_server_options(s.get("command")) for label, s in svc.items()}
    check_redis_roles("docker-compose.yml", options[CACHE_LABEL], options[METRICS_LABEL])
    named = set((compose().get("volumes") or {}).keys())
    data = [src for src, target in gateway_mounts(svc[CACHE_LABEL]) if target.rstrip("/") == options[CACHE_LABEL].get("dir", "/data")]
    expect(data and data[0] in named, f"the cache's Redis ({urls[CACHE_LABEL][0]}) has no named volume at its data directory")
    depends = gateway().get("depends_on") or {}
    for label, (host, _) in urls.items():
        expect(host in depends, f"the gateway does not depend_on {host!r}")


@check("compose: command is the image's CMD; XGW_RUNTIME_CONFIG picks a runtime config in the image")
def _compose_command():
    image_argv = final_argv()
    default = gateway().get("command")
    if default is not None:
        expect(isinstance(default, list), "command should be a list (exec form: the image needs no shell)")
        expect(SPIN_IMAGE_ENTRYPOINT_OR_OWN() + default == image_argv, f"command {default} differs from the image's CMD {image_argv[1:]}")
    redis = gateway({"XGW_RUNTIME_CONFIG": "runtime-config.redis.toml"}).get("command") or []
    expect(option_value(redis, "--runtime-config-file") == "runtime-config.redis.toml", "XGW_RUNTIME_CONFIG does not reach --runtime-config-file")
    copied = final_copied_files()
    for name in RUNTIME_CONFIGS:
        expect(name in copied, f"the image does not contain {name}")


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    if "dockerfile" not in _cache:
        out, buf = [], ""
        for raw in read("Dockerfile").splitlines():
            stripped = raw.strip()
            if stripped.startswith("#") or (not stripped and buf):
                continue  # comments (also inside continuations) and blank continuation lines
            if not stripped:
                continue
            if stripped.endswith("\\"):
                buf += stripped[:-1] + " "
                continue
            line = (buf + stripped).strip()
            buf = ""
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
        expect(not buf, "Dockerfile ends inside a line continuation")
        _cache["dockerfile"] = out
    return _cache["dockerfile"]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    expect(result, "Dockerfile has no FROM")
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def from_image(rest: str) -> tuple[str, str | None]:
    words = [w for w in rest.split() if not w.startswith("--")]
    alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
    return words[0], alias


def exec_form(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            argv = json.loads(rest)
        except json.JSONDecodeError as e:
            raise Failure(f"bad exec form {rest!r}: {e}")
        expect(isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"bad exec form {rest!r}")
        return argv
    return ["/bin/sh", "-c", rest]


def last(stage, keyword: str) -> str | None:
    values = [rest for k, rest in stage if k == keyword]
    return values[-1] if values else None


def SPIN_IMAGE_ENTRYPOINT_OR_OWN() -> list[str]:
    own = last(final_stage(), "ENTRYPOINT")
    return exec_form(own) if own is not None else list(SPIN_IMAGE_ENTRYPOINT)


def final_argv() -> list[str]:
    entrypoint = SPIN_IMAGE_ENTRYPOINT_OR_OWN()
    cmd = last(final_stage(), "CMD")
    expect(cmd is not None, "the final stage has no CMD")
    if entrypoint[:2] == ["/bin/sh", "-c"]:
        return entrypoint  # shell-form ENTRYPOINT ignores CMD
    return entrypoint + exec_form(cmd)


def final_workdir() -> str:
    workdir = "/"
    for keyword, rest in final_stage():
        if keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, rest.strip()))
    return workdir


def final_copies() -> list[tuple[dict, list[str], str]]:
    """(flags, sources, absolute destination) of each COPY/ADD of the final stage."""
    out, workdir = [], "/"
    for keyword, rest in final_stage():
        if keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, rest.strip()))
        if keyword not in ("COPY", "ADD"):
            continue
        words = rest.split()
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        if words and words[0].startswith("["):
            words = json.loads(" ".join(words))
        expect(len(words) >= 2, f"cannot read {keyword} {rest!r}")
        dest = words[-1]
        absolute = str(PurePosixPath(workdir, dest)) + ("/" if dest.endswith("/") or dest in (".", "./") else "")
        out.append((flags, words[:-1], absolute))
    return out


def final_copied_files() -> dict[str, str]:
    """Build-context files copied into the final stage, by name, with their destination."""
    files = {}
    for flags, sources, dest in final_copies():
        if "from" in flags:
            continue
        for source in sources:
            name = PurePosixPath(source).name
            files[name] = str(PurePosixPath(dest, name)) if dest.endswith("/") else dest
    return files


def installed_from_context(path: str) -> str | None:
    """The build-context file a COPY of the final stage installs at `path`, if any."""
    for flags, sources, dest in final_copies():
        if "from" in flags:
            continue
        for source in sources:
            target = str(PurePosixPath(dest, PurePosixPath(source).name)) if dest.endswith("/") else dest
            if target == path:
                return source
    return None


def entrypoint_script() -> str | None:
    """The repository script the image runs as its entrypoint, or None when it runs spin itself."""
    argv = final_argv()
    if PurePosixPath(argv[0]).name == "spin":
        return None
    source = installed_from_context(argv[0])
    expect(source, f"the image runs {argv[0]}, which is neither spin nor a file copied from the repository")
    return source


def spin_argv() -> list[str]:
    """The arguments Spin gets: the image's, through an entrypoint script that ends in exec spin "$@"."""
    argv = final_argv()
    script = entrypoint_script()
    if script is None:
        return argv
    lines = [line.strip() for line in read(script).splitlines() if line.strip() and not line.strip().startswith("#")]
    expect(lines and re.fullmatch(r'exec\s+(?:/usr/local/bin/)?spin\s+"\$@"', lines[-1]),
           f'{script} (the image\'s entrypoint) does not end in exec spin "$@"')
    return ["spin"] + argv[1:]


def dockerfile_state_dir() -> str:
    workdir = final_workdir()
    state = str(PurePosixPath(workdir, ".spin"))
    runs = " ".join(rest for k, rest in final_stage() if k == "RUN")
    expect(re.search(r"mkdir\b[^&;]*" + re.escape(state), runs), f"the final stage does not create {state}")
    expect(re.search(r"chown\b[^&;]*" + re.escape(state), runs), f"the final stage does not give {state} to the user")
    return state


@check("Dockerfile: final stage is FROM ghcr.io/spinframework/spin:v4.0.2")
def _docker_from():
    image, _ = from_image(final_stage()[0][1])
    expect(image == SPIN_IMAGE, f"final FROM is {image!r}, want {SPIN_IMAGE!r}")
    expect(len(stages()) >= 2, "expected a multi-stage build (a Rust stage, then Spin)")
    first, _ = from_image(stages()[0][0][1])
    expect(first.split(":")[0].split("/")[-1] == "rust", f"the build stage should use the official rust image, uses {first!r}")


@check("Dockerfile: runs spin up --listen 0.0.0.0:8001 --runtime-config-file <a copied config>")
def _docker_cmd():
    argv = spin_argv()
    expect(PurePosixPath(argv[0]).name == "spin" and argv[1:2] == ["up"], f"the image runs {argv}, not `spin up`")
    expect(option_value(argv, "--listen") == CONTAINER_LISTEN, f"--listen is {option_value(argv, '--listen')!r}")
    config = option_value(argv, "--runtime-config-file")
    expect(config, "no --runtime-config-file")
    copied = final_copied_files()
    expect(PurePosixPath(config).name in copied, f"{config} is not copied into the image")
    expect(copied[PurePosixPath(config).name] == str(PurePosixPath(final_workdir(), config)), f"{config} is not where spin up looks")


@check("Dockerfile: the image holds spin.toml and every component at the path spin.toml names")
def _docker_components():
    workdir = final_workdir()
    copied = final_copied_files()
    expect(copied.get("spin.toml") == str(PurePosixPath(workdir, "spin.toml")), "spin.toml is not copied into the working directory")
    build_runs = " ".join(rest for stage in stages()[:-1] for k, rest in stage if k == "RUN")
    target_copies = [dest for flags, _, dest in final_copies() if "from" in flags and dest.rstrip("/") == str(PurePosixPath(workdir, "target"))]
    expect(target_copies, f"no COPY --from=... puts the build output at {workdir}/target/")
    for name, component in manifest_components().items():
        source = component.get("source", "")
        expect(source == f"target/wasm32-wasip2/release/{name}.wasm", f"component {name}: unexpected source {source!r}")
        expect(re.search(rf"-p {re.escape(name)}\b", build_runs), f"the build stage does not build -p {name}")
    expect("--target wasm32-wasip2" in build_runs and "--release" in build_runs, "the build stage is not a wasm32-wasip2 release build")


@check("Dockerfile: EXPOSE 8001, HEALTHCHECK with a probe that is in the image, non-root USER")
def _docker_runtime():
    stage = final_stage()
    exposed = {p.split("/")[0] for k, rest in stage if k == "EXPOSE" for p in rest.split()}
    expect("8001" in exposed, f"EXPOSE 8001 missing (exposes {sorted(exposed)})")
    health = last(stage, "HEALTHCHECK")
    expect(health and health.split()[0].upper() != "NONE", "no HEALTHCHECK")
    m = re.search(r"(?:^|\s)CMD\s+(.*)$", health)
    expect(m, f"cannot read HEALTHCHECK {health!r}")
    probe = exec_form(m.group(1).strip())
    if probe[:2] != ["/bin/sh", "-c"]:
        installed = {dest for _, _, dest in final_copies()}
        expect(probe[0] in installed, f"the HEALTHCHECK runs {probe[0]}, which no COPY installs")
    expect("8001" in " ".join(probe), "the HEALTHCHECK does not probe port 8001")
    user = last(stage, "USER")
    expect(user, "the final stage has no USER (it would run as root)")
    expect(user.split(":")[0] not in ("root", "0"), f"USER {user} is root")


def final_run_commands() -> list[list[str]]:
    """The simple commands of the final stage's RUN lines, split on &&, || and ;."""
    out = []
    for keyword, rest in final_stage():
        if keyword != "RUN":
            continue
        words = [w for w in rest.split() if not w.startswith("--mount=")]
        for segment in re.split(r"&&|\|\||;", " ".join(words)):
            try:
                argv = shlex.split(segment)
            except ValueError as e:
                raise Failure(f"cannot read RUN {segment!r}: {e}")
            if argv:
                out.append(argv)
    return out


def account_options(argv: list[str], with_value: dict[str, str], flags: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """Options of a groupadd/useradd command (long names) and its last operand."""
    options, operand, i = {}, None, 1
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in with_value:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            options[with_value[name]] = value
        elif arg in flags:
            options[flags[arg]] = ""
        elif not arg.startswith("-"):
            operand = arg
        i += 1
    return options, operand


@check("Dockerfile: USER's uid and gid are the user and group the image creates and gives the state directory")
def _docker_user_group():
    groups: dict[str, str] = {}  # name -> gid
    users: dict[str, tuple[str, str | None, bool]] = {}  # name -> (uid, primary group, --user-group)
    chowns: list[tuple[str, list[str]]] = []
    for argv in final_run_commands():
        command = PurePosixPath(argv[0]).name
        if command in ("groupadd", "addgroup"):
            options, name = account_options(argv, {"--gid": "gid", "-g": "gid", "--key": "key", "-K": "key"}, {})
            expect(name and options.get("gid", "").isdigit(), f"{' '.join(argv)}: give the group a fixed --gid")
            groups[name] = options["gid"]
        elif command in ("useradd", "adduser"):
            options, name = account_options(
                argv,
                {"--uid": "uid", "-u": "uid", "--gid": "gid", "-g": "gid", "--home-dir": "home", "-d": "home",
                 "--shell": "shell", "-s": "shell", "--groups": "groups", "-G": "groups", "--key": "key", "-K": "key",
                 "--comment": "comment", "-c": "comment"},
                {"--user-group": "user-group", "-U": "user-group"},
            )
            expect(name and options.get("uid", "").isdigit(), f"{' '.join(argv)}: give the user a fixed --uid")
            users[name] = (options["uid"], options.get("gid"), "user-group" in options)
        elif command == "chown":
            operands = [a for a in argv[1:] if not a.startswith("-")]
            if len(operands) >= 2:
                chowns.append((operands[0], operands[1:]))
    user = last(final_stage(), "USER")
    expect(user, "the final stage has no USER")
    user_part, _, group_part = user.partition(":")

    def uid_of(value: str) -> str:
        if value.isdigit():
            return value
        expect(value in users, f"user {value!r} is not created in the final stage")
        return users[value][0]

    def gid_of(value: str) -> str:
        if value.isdigit():
            return value
        expect(value in groups, f"group {value!r} is not created with groupadd --gid in the final stage")
        return groups[value]

    uid = uid_of(user_part)
    named = [name for name, (u, _, _) in users.items() if u == uid]
    expect(named, f"USER {user}: no useradd creates uid {uid}, so it has no passwd entry")
    _, primary, user_group = users[named[0]]
    expect(primary is not None, f"useradd {named[0]} has no --gid: --user-group gives its group the next free "
                                "(system) gid, not the uid; create the group with groupadd --gid first")
    expect(not user_group, f"useradd {named[0]}: --user-group together with --gid")
    primary_gid = gid_of(primary)
    expect(primary_gid in groups.values(), f"gid {primary_gid} of user {named[0]} has no groupadd, so no group entry")
    gid = gid_of(group_part) if group_part else primary_gid
    expect(gid == primary_gid, f"USER {user} runs with gid {gid}, but user {named[0]}'s group has gid {primary_gid}")
    state = dockerfile_state_dir()
    owners = [owner for owner, paths in chowns if any(p.rstrip("/") == state for p in paths)]
    expect(owners, f"no chown of {state}")
    owner_user, sep, owner_group = owners[-1].partition(":")
    expect(uid_of(owner_user) == uid, f"{state} belongs to {owner_user}, not uid {uid}")
    expect(sep, f"chown {owners[-1]} {state} leaves its group root: give it {owner_user}:{gid}")
    expect(gid_of(owner_group or primary) == gid, f"{state} is given to group {owner_group or primary}, not gid {gid}")


@check("Dockerfile: README.md names the same image and port")
def _readme():
    text = read("README.md")
    expect(SPIN_IMAGE in text, f"README.md does not mention {SPIN_IMAGE}")
    expect("8001" in text, "README.md does not mention port 8001")


@check(".dockerignore keeps secrets and build output out of the context")
def _dockerignore():
    patterns = {line.strip().rstrip("/") for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")}
    for needed in (".env", "target", ".git", ".spin"):
        expect(needed in patterns, f".dockerignore does not exclude {needed}")


# ----------------------------------------------------------------------------- runtime config


def typed_entry(where: str, entry, kinds: dict, errors: list[str]) -> None:
    if not isinstance(entry, dict):
        errors.append(f"{where}: not a table")
        return
    kind = entry.get("type")
    if kind not in kinds:
        errors.append(f"{where}: type {kind!r} is not one of {sorted(kinds)}")
        return
    fields_ok(where, {k: v for k, v in entry.items() if k != "type"}, kinds[kind], errors)


def fields_ok(where: str, table: dict, spec: tuple[set, set], errors: list[str]) -> None:
    required, optional = spec
    for key in table:
        if key not in required | optional:
            errors.append(f"{where}: unknown field {key!r}")
    for key in required - set(table):
        errors.append(f"{where}: missing field {key!r}")


def runtime_config_errors(config: dict) -> list[str]:
    errors: list[str] = []
    for key, value in config.items():
        if key not in TOP_LEVEL_KEYS:
            errors.append(f"unknown top-level key {key!r} (Spin 4.0.2 refuses to start)")
        elif key in TOP_LEVEL_SCALARS:
            if not isinstance(value, TOP_LEVEL_SCALARS[key]) or isinstance(value, bool):
                errors.append(f"{key} should be a {TOP_LEVEL_SCALARS[key].__name__}")
        elif key in ("variables_provider", "config_provider"):
            if not isinstance(value, list):
                errors.append(f"{key} should be an array of tables ([[{key}]])")
            else:
                for i, entry in enumerate(value):
                    typed_entry(f"{key}[{i}]", entry, VARIABLE_PROVIDERS, errors)
        elif key in ("key_value_store", "sqlite_database"):
            kinds = KEY_VALUE_STORES if key == "key_value_store" else SQLITE_DATABASES
            if not isinstance(value, dict):
                errors.append(f"{key} should be a table of labels")
            else:
                for label, entry in value.items():
                    typed_entry(f"{key}.{label}", entry, kinds, errors)
        elif key == "llm_compute":
            typed_entry(key, value, LLM_COMPUTE, errors)
        elif key == "client_tls":
            for i, entry in enumerate(value if isinstance(value, list) else [None]):
                if isinstance(entry, dict):
                    fields_ok(f"client_tls[{i}]", entry, CLIENT_TLS, errors)
                else:
                    errors.append("client_tls should be an array of tables")
        elif key in PLAIN_TABLES:
            if isinstance(value, dict):
                fields_ok(key, value, PLAIN_TABLES[key], errors)
            else:
                errors.append(f"{key} should be a table")
    return errors


def check_runtime_config(rel: str) -> None:
    config = load_toml(rel)
    errors = runtime_config_errors(config)
    expect(not errors, f"{rel}: " + "; ".join(errors))
    defined = set(config.get("key_value_store", {})) | IMPLICIT_KEY_VALUE_LABELS
    missing = sorted(manifest_kv_labels() - defined)
    expect(not missing, f"{rel}: key-value stores used in spin.toml but not defined: {missing}")
    # Spin refuses to start an app whose database label has no definition ("default" aside).
    databases = config.get("sqlite_database", {})
    missing = sorted(manifest_sqlite_labels() - set(databases) - {"default"})
    expect(not missing, f"{rel}: SQLite databases used in spin.toml but not defined: {missing}")
    for label in manifest_sqlite_labels() & set(databases):
        # A new connection per request: an in-memory database would be empty every time.
        db = databases[label]
        expect(db.get("type") != "spin" or "path" in db, f"{rel}: sqlite_database.{label} is in memory (no path)")
    env = [p for p in config.get("variables_provider", []) if p.get("type") == "env"]
    expect(env and env[0].get("prefix") == "XIMILAR", f"{rel}: no env variables provider with prefix XIMILAR (.env uses XIMILAR_<NAME>)")


@check("runtime-config.toml: only keys Spin 4.0.2 accepts; every store spin.toml uses is defined")
def _runtime_config():
    check_runtime_config("runtime-config.toml")


@check("runtime-config.redis.toml: only keys Spin 4.0.2 accepts; every store is Redis, and the state is in them")
def _runtime_config_redis():
    check_runtime_config("runtime-config.redis.toml")
    config = load_toml("runtime-config.redis.toml")
    for label in manifest_kv_labels():
        store = config["key_value_store"][label]
        expect(store["type"] == "redis" and store["url"].startswith(("redis://", "rediss://")), f"key_value_store.{label} is not a redis:// store")
    # The first provider that knows a variable wins, so a static state_store ahead of env fixes it.
    first = next((p for p in config.get("variables_provider", []) if "state_store" in p.get("values", {}) or p.get("type") == "env"), {})
    expect(first.get("values", {}).get("state_store") == "key-value",
           "runtime-config.redis.toml does not set state_store = \"key-value\" ahead of the env provider")


@check("runtime-config.redis.toml: cache and metrics on two different Redis servers")
def _runtime_config_redis_servers():
    urls = redis_store_urls()
    expect(urls[CACHE_LABEL] != urls[METRICS_LABEL],
           f"cache and metrics share the server {urls[CACHE_LABEL][0]}:{urls[CACHE_LABEL][1]}: maxmemory-policy is per "
           "server, so the counters would be evicted with the cache (or the cache never evicted)")


@check("redis option reader and role check (self-test)")
def _redis_self_test():
    opts = redis_server_options(["redis-server", "--maxmemory", "256mb", "--save", "300 1 60 1000", "--appendonly", "no"])
    expect(opts == {"maxmemory": "256mb", "save": "300 1 60 1000", "appendonly": "no"}, f"read {opts}")
    expect(redis_server_options('redis-server --save "" --maxmemory-policy noeviction') == {"save": "", "maxmemory-policy": "noeviction"}, "string form")
    good = {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru", "save": "60 1000"}
    check_redis_roles("self-test", good, {})
    for cache, metrics, needle in (
        ({**good, "maxmemory-policy": "volatile-lru"}, {}, "maxmemory-policy 'volatile-lru'"),
        ({**good, "maxmemory": "0"}, {}, "no --maxmemory"),
        ({**good, "save": ""}, {}, "keeps nothing on disk"),
        (good, {"maxmemory-policy": "allkeys-lru"}, "may evict counters"),
    ):
        try:
            check_redis_roles("self-test", cache, metrics)
        except Failure as e:
            expect(needle in str(e), f"role check says {e}, want {needle!r}")
        else:
            raise Failure(f"role check accepts {cache} / {metrics}")


@check("runtime config validator refuses what Spin refuses (self-test)")
def _validator_self_test():
    bad = {
        "key_value_store": {"cache": {"type": "redis", "uri": "redis://x"}, "m": {"type": "memcached"}},
        "variables_provider": [{"type": "env", "prefix": "X", "dotenv": ".env"}],
        "state_dir": 3,
        "listen": "0.0.0.0:80",
    }
    errors = " | ".join(runtime_config_errors(bad))
    for needle in ("unknown field 'uri'", "missing field 'url'", "type 'memcached'", "unknown field 'dotenv'", "state_dir should be", "'listen'"):
        expect(needle in errors, f"the validator misses {needle!r}: {errors}")
    expect(not runtime_config_errors({"state_dir": "", "log_dir": "/l", "max_instance_memory": 1 << 30}), "the validator refuses valid scalars")


# ----------------------------------------------------------------------------- .env.example


def card_variables() -> tuple[list[str], str]:
    """The variables of the deployment's server card (its `.env` block), kept here as a list."""
    return CARD_VARIABLES, "the server card's .env block"


@check(".env.example: every spin.toml variable as XIMILAR_<NAME>, and the card's names")
def _env_example():
    text = read(".env.example")
    missing = [
        f"XIMILAR_{name.upper()}"
        for name in manifest_variables()
        if not re.search(rf"^\s*#?\s*XIMILAR_{name.upper()}=", text, re.M)
    ]
    expect(not missing, f".env.example lacks {missing}")
    names, source = card_variables()
    absent = []
    for name in names:
        if name.startswith("XIMILAR_"):
            if not re.search(rf"^\s*#?\s*{name}=", text, re.M):
                absent.append(name)
        elif not re.search(rf"\b{name}\b", text):
            absent.append(name)
    expect(not absent, f".env.example does not mention the card's {absent} ({source})")


# ----------------------------------------------------------------------------- Prometheus

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "count_values", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "changes",
    "resets", "histogram_quantile", "absent", "absent_over_time", "avg_over_time", "max_over_time",
    "min_over_time", "sum_over_time", "count_over_time", "last_over_time", "clamp_min", "clamp_max",
    "abs", "ceil", "floor", "round", "scalar", "vector", "time", "timestamp", "label_replace",
    "label_join", "predict_linear", "sort", "sort_desc", "inf", "nan",
}


def exposed_metric_names() -> set[str]:
    text = read("src/metrics.rs")
    names = set(re.findall(r'pub const [A-Z_]+: &str = "([a-z_:][a-z0-9_:]*)";', text))
    expect(names, "no metric names found in src/metrics.rs (pub const X: &str = \"...\")")
    series = set(names)
    for name in names:
        series |= {name + "_bucket", name + "_sum", name + "_count"}
    return series | {"up"}


def expr_metric_names(expr: str) -> set[str]:
    cleaned = re.sub(r'"[^"]*"', "", expr)
    cleaned = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", cleaned)
    cleaned = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", cleaned)
    tokens = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", cleaned)
    return {t for t in tokens if t not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", t)}


def alert_rules() -> list[dict]:
    doc = load_yaml("deploy/prometheus/alerts.yml")
    return [r for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]


@check("alerts.yml: the required alerts, on series the gateway exposes")
def _alerts_content():
    rules = alert_rules()
    expect(rules, "deploy/prometheus/alerts.yml has no alert rules")
    exprs = {r["alert"]: " ".join(str(r["expr"]).split()) for r in rules}
    wanted = {
        "gateway down": r"\bup\{[^}]*\}\s*==\s*0",
        "5xx ratio": r'http_requests_total\{[^}]*status="5xx"',
        "Ximilar unreachable": r"ximilar_reachable(\{[^}]*\})?\s*==\s*0",
        "retry rate": r"ximilar_retries_total",
        "p99 latency": r"histogram_quantile\(0\.99,.*by \(le, handler\).*http_request_duration_seconds_bucket",
        "cache hit ratio": r"gateway_cache_hits_total.*gateway_cache_misses_total",
        "breaker open": r"ximilar_breaker_open(\{[^}]*\})?\s*==\s*1",
        "credits at 90 %": r"ximilar_credits_used.*>=\s*0\.9\s*\*\s*ximilar_credits_limit",
    }
    for what, pattern in wanted.items():
        expect(any(re.search(pattern, e) for e in exprs.values()), f"no alert for {what} (/{pattern}/)")
    known = exposed_metric_names()
    for name, expr in exprs.items():
        unknown = expr_metric_names(expr) - known
        expect(not unknown, f"alert {name} uses series the gateway does not expose: {sorted(unknown)}")
    for rule in rules:
        expect(rule.get("labels", {}).get("severity"), f"alert {rule['alert']} has no severity")
        expect(rule.get("annotations", {}).get("summary"), f"alert {rule['alert']} has no summary")
        expect('job="ximilar-gw"' in exprs[rule["alert"]], f"alert {rule['alert']} is not limited to job=\"ximilar-gw\"")


@check("prometheus.yml: scrapes 10.1.0.12:8001/metrics as job ximilar-gw and loads alerts.yml")
def _prometheus_config():
    doc = load_yaml("deploy/prometheus/prometheus.yml")
    jobs = {j.get("job_name"): j for j in doc.get("scrape_configs", [])}
    expect(SERVICE in jobs, "no scrape job 'ximilar-gw' (the alert rules select job=\"ximilar-gw\")")
    job = jobs[SERVICE]
    expect(job.get("metrics_path", "/metrics") == "/metrics", "the job does not scrape /metrics")
    targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    expect("10.1.0.12:8001" in targets, f"the job's targets are {targets}")
    expect("alerts.yml" in doc.get("rule_files", []), "rule_files does not load alerts.yml")


def promtool(*args: str) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        message = "promtool is not on PATH (apt-get install -y prometheus)"
        if IN_CI:
            raise Failure(message)
        raise Skip(message)
    run = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    expect(run.returncode == 0, f"promtool {' '.join(args)} failed:\n{run.stdout}{run.stderr}")


@check("promtool check rules deploy/prometheus/alerts.yml")
def _promtool_rules():
    promtool("check", "rules", "deploy/prometheus/alerts.yml")


@check("promtool check config deploy/prometheus/prometheus.yml")
def _promtool_config():
    promtool("check", "config", "deploy/prometheus/prometheus.yml")


@check("promtool test rules deploy/prometheus/alerts.test.yml")
def _promtool_tests():
    promtool("test", "rules", "deploy/prometheus/alerts.test.yml")


@check("promtool check config deploy/prometheus/prometheus.compose.yml")
def _promtool_compose_config():
    promtool("check", "config", "deploy/prometheus/prometheus.compose.yml")


# ----------------------------------------------------------------------------- monitoring profile

MONITORING = {"prometheus": "prom/prometheus:", "grafana": "grafana/grafana:", "jaeger": "jaegertracing/all-in-one:"}
DASHBOARD_JSON = "deploy/grafana/dashboards/ximilar-gw.json"


def monitoring_services(env: dict[str, str] | None = None) -> dict[str, dict]:
    services = compose(env)["services"]
    for name in MONITORING:
        expect(name in services, f"docker-compose.yml has no service {name!r} (profile monitoring)")
    return {name: services[name] for name in MONITORING}


def bind_mounts(svc: dict) -> dict[str, tuple[str, bool]]:
    """target -> (repository path, read-only) of each ./ bind mount."""
    out = {}
    for entry in svc.get("volumes", []):
        if isinstance(entry, dict):
            source, target, ro = str(entry.get("source", "")), str(entry.get("target", "")), bool(entry.get("read_only"))
        else:
            parts = str(entry).split(":")
            source, target, ro = parts[0], parts[1] if len(parts) > 1 else "", "ro" in parts[2:]
        if source.startswith("./"):
            out[target.rstrip("/")] = (source[2:].rstrip("/"), ro)
    return out


@check("compose: profile 'monitoring' (Prometheus, Grafana, Jaeger) is off by default, pinned, private, read-only config")
def _compose_monitoring():
    services = monitoring_services()
    expect(not (gateway().get("profiles")), "the gateway itself must not be behind a profile")
    depends = gateway().get("depends_on") or {}
    for name, svc in services.items():
        expect(svc.get("profiles") == ["monitoring"], f"service {name!r} must have exactly the profile 'monitoring', has {svc.get('profiles')!r}")
        image = str(svc.get("image", ""))
        expect(image.startswith(MONITORING[name]), f"service {name!r} runs {image!r}, want {MONITORING[name]}<version>")
        tag = image.rsplit(":", 1)[-1]
        expect(re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"service {name!r}: image {image!r} is not pinned to a version")
        expect(name not in depends, f"the gateway depends on {name!r}: the default setup would need the profile")
        for ip, _, _ in published_ports(svc):
            expect(ip not in ("", "0.0.0.0", "::"), f"service {name!r} publishes a port on every interface")
        for target, (source, ro) in bind_mounts(svc).items():
            expect(ro, f"service {name!r} mounts ./{source} writable at {target}")
            expect((ROOT / source).exists(), f"service {name!r} mounts ./{source}, which is missing")
    for ip, _, _ in [p for svc in monitoring_services({"XGW_BIND": "127.0.0.1"}).values() for p in published_ports(svc)]:
        expect(ip == "127.0.0.1", "XGW_BIND does not move the monitoring ports")
    # No other service is left on when the profile is off: only the gateway has no profile.
    unprofiled = [n for n, s in compose()["services"].items() if not s.get("profiles")]
    expect(unprofiled == [SERVICE], f"services started by a plain `docker compose up`: {unprofiled}")


@check("compose: the monitoring Prometheus loads the alert rules and scrapes the gateway's service")
def _compose_monitoring_prometheus():
    svc = monitoring_services()["prometheus"]
    mounts = bind_mounts(svc)
    config = option_value([str(a) for a in svc.get("command", [])], "--config.file")
    expect(config, "the prometheus service sets no --config.file")
    directory, name = config.rsplit("/", 1)
    expect(directory in mounts, f"{config} is not in a mounted directory ({sorted(mounts)})")
    rel = f"{mounts[directory][0]}/{name}"
    doc = load_yaml(rel)
    expect("alerts.yml" in doc.get("rule_files", []), f"{rel} does not load alerts.yml")
    jobs = {j.get("job_name"): j for j in doc.get("scrape_configs", [])}
    expect(SERVICE in jobs, f"{rel} has no job {SERVICE!r} (the alerts and the dashboard select it)")
    targets = [t for sc in jobs[SERVICE].get("static_configs", []) for t in sc.get("targets", [])]
    expect(targets == [f"{SERVICE}:8001"], f"{rel}: job {SERVICE} scrapes {targets}, want the compose service {SERVICE}:8001")


@check("grafana: provisioning loads the dashboard, whose queries select only series the gateway exposes")
def _grafana():
    svc = monitoring_services()["grafana"]
    mounts = bind_mounts(svc)
    expect(mounts.get("/etc/grafana/provisioning", ("",))[0] == "deploy/grafana/provisioning",
           "deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning")
    datasources = [d for f in sorted((ROOT / "deploy/grafana/provisioning/datasources").glob("*.yml"))
                   for d in load_yaml(str(f.relative_to(ROOT))).get("datasources", [])]
    prometheus = [d for d in datasources if d.get("type") == "prometheus"]
    expect(len(prometheus) == 1 and prometheus[0].get("url") == "http://prometheus:9090",
           f"want one Prometheus datasource at http://prometheus:9090, have {prometheus}")
    uid = prometheus[0].get("uid")
    providers = [p for f in sorted((ROOT / "deploy/grafana/provisioning/dashboards").glob("*.yml"))
                 for p in load_yaml(str(f.relative_to(ROOT))).get("providers", [])]
    paths = {str(p.get("options", {}).get("path", "")).rstrip("/") for p in providers}
    dashboards_dir = [t for t, (s, _) in mounts.items() if s == str(PurePosixPath(DASHBOARD_JSON).parent)]
    expect(dashboards_dir and dashboards_dir[0] in paths, f"no dashboard provider reads the mounted dashboards ({paths})")
    try:
        dashboard = json.loads(read(DASHBOARD_JSON))
    except json.JSONDecodeError as e:
        raise Failure(f"{DASHBOARD_JSON} is not valid JSON: {e}")
    known = exposed_metric_names()
    exprs = 0
    for panel in [p for top in dashboard.get("panels", []) for p in [top, *top.get("panels", [])]]:
        if panel.get("type") == "row":
            continue
        where = f"panel {panel.get('title')!r}"
        expect((panel.get("datasource") or {}).get("uid") == uid, f"{where} does not use the datasource uid {uid!r}")
        for target in panel.get("targets", []):
            expr = str(target.get("expr") or "")
            expect(expr.strip(), f"{where}: a target without an expression")
            exprs += 1
            unknown = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)) - known
            expect(not unknown, f"{where} selects series the gateway does not expose: {sorted(unknown)}")
            if re.search(r"\b[a-z_]+\{", expr):
                expect('job="ximilar-gw"' in expr, f"{where}: a query not limited to job=\"ximilar-gw\": {expr}")
    expect(exprs, f"{DASHBOARD_JSON} has no queries")


# ----------------------------------------------------------------------------- Kubernetes


def kube_objects() -> list[dict]:
    directory = ROOT / "deploy" / "kubernetes"
    expect(directory.is_dir(), "deploy/kubernetes is missing")
    objects = []
    for path in sorted(directory.glob("*.yaml")):
        objects += [d for d in load_yaml_docs(str(path.relative_to(ROOT))) if isinstance(d, dict)]
    return objects


def kube(kind: str) -> list[dict]:
    return [o for o in kube_objects() if o.get("kind") == kind]


def spinapp() -> dict:
    apps = kube("SpinApp")
    expect(len(apps) == 1, f"expected one SpinApp, found {len(apps)}")
    return apps[0]


def example_secrets() -> dict[str, dict[str, str]]:
    """The example Secrets of deploy/kubernetes (secret.example.yaml): name -> key -> value."""
    return {s["metadata"]["name"]: {k: str(v) for k, v in (s.get("stringData") or {}).items()} for s in kube("Secret")}


def spinapp_store_urls() -> dict[str, str]:
    """label -> URL of the SpinApp's key-value stores. A URL taken from a Secret (it holds
    the password) is read from the example Secret, whose placeholder keeps the host."""
    urls = {}
    for store in spinapp()["spec"].get("runtimeConfig", {}).get("keyValueStores", []):
        for option in store.get("options", []):
            if option.get("name") != "url":
                continue
            ref = (option.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                example = example_secrets().get(ref.get("name"), {})
                expect(ref.get("key") in example,
                       f"store {store['name']}: secret.example.yaml shows no key {ref.get('key')!r} in Secret {ref.get('name')!r}")
                urls[store["name"]] = example[ref["key"]]
            else:
                urls[store["name"]] = str(option.get("value") or "")
    return urls


@check("kubernetes: SpinApp with 3 replicas on an executor that runs the Spin 4.0.2 CLI")
def _kube_spinapp():
    app = spinapp()
    expect(app.get("apiVersion") == "core.spinkube.dev/v1alpha1", f"SpinApp apiVersion is {app.get('apiVersion')!r}")
    spec = app.get("spec", {})
    expect(spec.get("replicas") == 3, f"replicas is {spec.get('replicas')!r}, want 3")
    expect(spec.get("image"), "SpinApp has no image")
    executors = {e["metadata"]["name"]: e for e in kube("SpinAppExecutor")}
    expect(spec.get("executor") in executors, f"executor {spec.get('executor')!r} is not defined in deploy/kubernetes")
    executor = executors[spec["executor"]]
    expect(executor.get("apiVersion") == "core.spinkube.dev/v1alpha1", "SpinAppExecutor apiVersion")
    config = executor.get("spec", {})
    expect(config.get("createDeployment") is True, "the executor must create the Deployment")
    deployment = config.get("deploymentConfig", {})
    expect(deployment.get("spinImage") == SPIN_IMAGE, f"spinImage is {deployment.get('spinImage')!r}, want {SPIN_IMAGE}")
    expect("runtimeClassName" not in deployment, "runtimeClassName selects the shim, whose Spin cannot run these components")


@check("kubernetes: the state in Redis (cache, metrics), the database defined; Redis Deployment and Service match")
def _kube_redis():
    spec = spinapp()["spec"]
    runtime = spec.get("runtimeConfig", {})
    expect(not runtime.get("loadFromSecret"), "expected runtimeConfig.keyValueStores, not loadFromSecret")
    stores = {}
    for store in runtime.get("keyValueStores", []):
        options = {o["name"]: o.get("value") for o in store.get("options", [])}
        stores[store["name"]] = {"type": store["type"], **options}
    errors = runtime_config_errors({"key_value_store": stores})
    expect(not errors, "; ".join(errors))
    missing = sorted(manifest_kv_labels() - set(stores))
    expect(not missing, f"stores used in spin.toml but not configured: {missing}")
    # The replicas' state goes to these stores, and the database every component is
    # granted is defined (Spin refuses to start otherwise) though unused.
    values = {v["name"]: v.get("value") for v in spec.get("variables", [])}
    expect(values.get("state_store") == "key-value", "the SpinApp does not set state_store = key-value")
    databases = {}
    for db in runtime.get("sqliteDatabases", []):
        databases[db["name"]] = {"type": db["type"], **{o["name"]: o.get("value") for o in db.get("options", [])}}
    errors = runtime_config_errors({"sqlite_database": databases})
    expect(not errors, "; ".join(errors))
    missing = sorted(manifest_sqlite_labels() - set(databases) - {"default"})
    expect(not missing, f"SQLite databases used in spin.toml but not configured: {missing}")
    services = {s["metadata"]["name"]: s for s in kube("Service")}
    deployments = kube("Deployment")
    urls = spinapp_store_urls()
    for label, store in stores.items():
        expect(store["type"] == "redis", f"store {label} is {store['type']}, not redis")
        url = urlsplit(urls.get(label, ""))
        expect(url.hostname in services, f"store {label}: {url.hostname!r} is not a Service here")
        service = services[url.hostname]
        expect(any(p.get("port") == (url.port or 6379) for p in service["spec"].get("ports", [])), f"Service {url.hostname} has no port {url.port or 6379}")
        selector = service["spec"].get("selector", {})
        pods = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        expect(pods, f"Service {url.hostname} selects no Deployment")
        images = [c["image"] for d in pods for c in d["spec"]["template"]["spec"]["containers"]]
        expect(any(i.startswith("redis:") for i in images), f"Service {url.hostname} does not select Redis")


def kube_redis_for(url: str) -> tuple[dict, dict]:
    """The Deployment and Redis container behind a redis:// URL of the SpinApp."""
    host = urlsplit(url).hostname
    services = {s["metadata"]["name"]: s for s in kube("Service")}
    expect(host in services, f"{url}: {host!r} is not a Service here")
    selector = services[host]["spec"].get("selector", {})
    pods = [d for d in kube("Deployment") + kube("StatefulSet")
            if selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
    expect(len(pods) == 1, f"Service {host} selects {len(pods)} workloads, want one")
    containers = [c for c in pods[0]["spec"]["template"]["spec"]["containers"] if str(c.get("image", "")).startswith("redis:")]
    expect(len(containers) == 1, f"{pods[0]['metadata']['name']}: want one Redis container")
    return pods[0], containers[0]


@check("kubernetes: the cache's Redis is allkeys-lru on a PersistentVolumeClaim, the counters' noeviction, two servers")
def _kube_redis_roles():
    stores = spinapp_store_urls()
    expect(CACHE_LABEL in stores and METRICS_LABEL in stores, f"SpinApp stores are {sorted(stores)}")
    workloads = {label: kube_redis_for(url) for label, url in stores.items() if label in (CACHE_LABEL, METRICS_LABEL)}
    expect(workloads[CACHE_LABEL][0] is not workloads[METRICS_LABEL][0], "cache and metrics use the same Redis workload")
    options = {label: redis_server_options((c.get("command") or []) + (c.get("args") or [])) for label, (_, c) in workloads.items()}
    check_redis_roles("deploy/kubernetes", options[CACHE_LABEL], options[METRICS_LABEL])
    workload, container = workloads[CACHE_LABEL]
    data_dir = options[CACHE_LABEL].get("dir", "/data")
    mounts = [m["name"] for m in container.get("volumeMounts", []) if m.get("mountPath", "").rstrip("/") == data_dir]
    expect(mounts, f"{workload['metadata']['name']}: nothing mounted at {data_dir}")
    claims = {c["metadata"]["name"] for c in kube("PersistentVolumeClaim")}
    templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    claim = (volumes.get(mounts[0], {}).get("persistentVolumeClaim") or {}).get("claimName")
    expect(mounts[0] in templates or claim in claims,
           f"{workload['metadata']['name']}: {data_dir} is not on a PersistentVolumeClaim defined here, so the snapshot dies with the pod")


@check("kubernetes: token and collection from a Secret; variables exist in spin.toml")
def _kube_variables():
    variables = spinapp()["spec"].get("variables", [])
    declared = manifest_variables()
    by_name = {v["name"]: v for v in variables}
    unknown = sorted(set(by_name) - set(declared))
    expect(not unknown, f"SpinApp variables not in spin.toml: {unknown}")
    required = [n for n, v in declared.items() if v.get("required")]
    expect(all(n in by_name for n in required), f"required variables missing from the SpinApp: {required}")
    secrets = set()
    for name, key in (("api_token", "XIMILAR_API_TOKEN"), ("collection_id", "XIMILAR_COLLECTION_ID")):
        ref = (by_name.get(name, {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        expect(ref.get("key") == key, f"variable {name} should come from secret key {key}, has {ref or by_name.get(name)}")
        expect("value" not in by_name[name], f"variable {name} must not carry a literal value")
        secrets.add(ref.get("name"))
    expect(len(secrets) == 1, f"token and collection come from different Secrets: {secrets}")
    examples = [s for s in kube("Secret") if s["metadata"]["name"] in secrets]
    for secret in examples:
        expect(set(secret.get("stringData", secret.get("data", {}))) >= {"XIMILAR_API_TOKEN", "XIMILAR_COLLECTION_ID"}, "the example Secret lacks a key")


@check("kubernetes: kustomization resources exist; README says why not the shim")
def _kube_files():
    kustomization = load_yaml("deploy/kubernetes/kustomization.yaml")
    for resource in kustomization.get("resources", []):
        expect((ROOT / "deploy" / "kubernetes" / resource).is_file(), f"kustomization resource {resource} is missing")
    expect(not any("secret" in r for r in kustomization.get("resources", [])), "the kustomization must not apply the example Secret")
    readme = read("deploy/kubernetes/README.md")
    expect("containerd-shim-spin" in readme and "4.0.2" in readme, "deploy/kubernetes/README.md does not explain the executor choice")


# Kustomize's "legacy" order (api/resid/gvk.go): these kinds first and last, in this
# order; every other kind in between, by apiVersion and kind.
KUSTOMIZE_ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
    "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
KUSTOMIZE_ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def kustomize_output_order() -> list[tuple[str, str]]:
    """(kind, name) in the order `kustomize build` emits the kustomization's objects."""
    kustomization = load_yaml("deploy/kubernetes/kustomization.yaml")
    loaded = []
    for resource in kustomization.get("resources", []):
        for doc in load_yaml_docs(f"deploy/kubernetes/{resource}"):
            if isinstance(doc, dict):
                loaded.append(doc)
    sort = kustomization.get("sortOptions") or {}
    order = sort.get("order", "legacy")
    expect(order in ("legacy", "fifo"), f"sortOptions.order {order!r} is neither legacy nor fifo")
    if order == "legacy":
        legacy = sort.get("legacySortOptions") or {}
        first = legacy.get("orderFirst", KUSTOMIZE_ORDER_FIRST)
        last_kinds = legacy.get("orderLast", KUSTOMIZE_ORDER_LAST)

        def rank(doc):
            kind = doc.get("kind", "")
            if kind in first:
                return (0, first.index(kind), "", "")
            if kind in last_kinds:
                return (2, last_kinds.index(kind), "", "")
            return (1, 0, doc.get("apiVersion", ""), kind)

        loaded = sorted(loaded, key=lambda d: (*rank(d), d.get("metadata", {}).get("name", "")))
    return [(d.get("kind", ""), d.get("metadata", {}).get("name", "")) for d in loaded]


@check("kubernetes: one apply -k creates the SpinAppExecutor before the SpinApp (admission webhook)")
def _kube_order():
    emitted = kustomize_output_order()
    kinds = [kind for kind, _ in emitted]
    expect("SpinApp" in kinds and "SpinAppExecutor" in kinds, f"the kustomization emits {emitted}")
    expect(
        max(i for i, k in enumerate(kinds) if k == "SpinAppExecutor") < min(i for i, k in enumerate(kinds) if k == "SpinApp"),
        f"kustomize emits {kinds}: the SpinApp would reach the operator's webhook before its executor exists "
        "(set sortOptions in kustomization.yaml)",
    )
    # Client-side only: kubectl renders the kustomization without a cluster.
    exe = shutil.which("kubectl")
    if exe is not None:
        run = subprocess.run([exe, "kustomize", "deploy/kubernetes"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        expect(run.returncode == 0, f"kubectl kustomize deploy/kubernetes failed:\n{run.stderr}")
        rendered = [(d.get("kind", ""), d.get("metadata", {}).get("name", ""))
                    for d in yaml.safe_load_all(run.stdout) if isinstance(d, dict)]
        expect(rendered == emitted, f"kubectl kustomize emits {rendered}, this check expects {emitted}")


# ----------------------------------------------------------------------------- who may use Redis and the gateway
#
# Whoever reaches one of the gateway's Redis servers can forge cached answers, reset
# callers' budgets or hold the breaker open, and whoever reaches the gateway without a
# caller key spends credits. These checks fail when a shipped Redis takes no password,
# when a password is written into the repository, when the Kubernetes Redis admits
# pods other than the gateway's, or when the SpinApp runs without caller keys.

# ${XGW_REDIS_<NAME>}: what scripts/render-runtime-config.sh fills in.
REDIS_PLACEHOLDER = re.compile(r"\$\{XGW_REDIS_[A-Z0-9_]+\}")
# Characters a URL, a shell or a Redis config line would each mangle.
TEST_PASSWORD = "Test p@ss:w/rd?#%\"'\\é-0123456789"
# The label the spin-operator gives every pod of a SpinApp (pkg/spinapp: NameLabelKey).
SPINAPP_POD_LABEL = "core.spinkube.dev/app-name"


def is_placeholder(value: str) -> bool:
    """A value that stands for a secret without being one: a variable, <...>, put-...-here, ..."""
    v = value.strip().strip("'\"`")
    return (not v or v.startswith(("$", "<")) or v in ("...", "***")
            or bool(re.search(r"put-[a-z0-9-]*-here", v)))


def redis_credentials(where: str, argv: list[str]) -> list[str]:
    """The passwords a redis-server command line, or the shell script that starts it,
    gives Redis: requirepass in a config line, or the >password / #sha256 rules of ACL
    users. Fails when the default user needs none."""
    text = "\n".join(argv)
    expect(not re.search(r"\bnopass\b", text), f"{where}: an ACL rule says nopass")
    expect("requirepass" not in redis_server_options(argv),
           f"{where}: --requirepass puts the password on redis-server's command line, which ps shows; use a config line")
    found = re.findall(r"^\s*requirepass\s+(\S+)", text, re.M)
    default_ok = bool(found)
    for m in re.finditer(r"^\s*user\s+(\S+)\s+([^\n]*)", text, re.M):
        words = m.group(2).split()
        secrets = [w[1:] for w in words if w[:1] in (">", "#")]
        found += secrets
        if m.group(1) == "default":
            default_ok = bool(secrets) or "off" in words
    expect(default_ok, f"{where}: Redis can be used without a password (no requirepass, no ACL rule "
                       "that gives the default user a password or turns it off)")
    for secret in found:
        expect("$" in secret, f"{where}: a password literal in its command line")
    return found


def referenced_env(text: str, names) -> set[str]:
    """Which of `names` a shell script (or Kubernetes' $(NAME)) refers to."""
    return {n for n in names if re.search(rf"\$(?:\{{#?|\()?{re.escape(n)}\b", text)}


def kube_expand(text: str, values: dict[str, str]) -> str:
    """Kubernetes' expansion of command and args: $$ is $, $(NAME) a variable of the container."""
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m.group(1) == "$" else values.get(m.group(2), m.group(0)), text)


def run_redis_start(where: str, argv: list[str], env_names: set[str]) -> None:
    """Runs a `sh -c` start script of Redis against stand-ins for docker-entrypoint.sh and
    redis-server that record their arguments and stdin: with a password set, Redis must be
    told it (itself, or its SHA-256 in an ACL rule), never on its command line; with an
    empty one the script must refuse to start Redis."""
    if len(argv) < 3 or PurePosixPath(argv[0]).name != "sh" or argv[1] != "-c":
        return  # a plain redis-server command line: nothing to run
    sh = shutil.which("sh")
    expect(sh, "no sh on PATH to run the Redis start script")
    with tempfile.TemporaryDirectory() as tmp:
        for stub in ("docker-entrypoint.sh", "redis-server"):
            path = Path(tmp, stub)
            path.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$XGW_TEST_OUT/args"\ncat > "$XGW_TEST_OUT/stdin"\n')
            path.chmod(0o755)
        base = {"PATH": f"{tmp}:/usr/bin:/bin", "XGW_TEST_OUT": tmp, "LC_ALL": "C.UTF-8"}
        run = subprocess.run([sh, *argv[1:]], env={**base, **{n: TEST_PASSWORD for n in env_names}},
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        expect(run.returncode == 0, f"{where}: its start script fails with a password set: {run.stderr.strip()}")
        args, stdin = Path(tmp, "args").read_text(), Path(tmp, "stdin").read_text()
        expect(TEST_PASSWORD not in args, f"{where}: the password is on redis-server's command line, which ps shows")
        digest = hashlib.sha256(TEST_PASSWORD.encode()).hexdigest()
        told = re.search(rf"^\s*user\s+default\s+(?=.*\bon\b).*(#{digest}|>{re.escape(TEST_PASSWORD)})(\s|$)", stdin, re.M) \
            or re.search(rf"^\s*requirepass\s+\"?{re.escape(TEST_PASSWORD)}", stdin, re.M)
        expect(told, f"{where}: with a password set, Redis is not given it (its config on stdin: {stdin.strip()!r})")
        for name in env_names:
            Path(tmp, "args").unlink()
            run = subprocess.run([sh, *argv[1:]], env={**base, **{n: TEST_PASSWORD for n in env_names}, name: ""},
                                 capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            expect(run.returncode != 0 and not Path(tmp, "args").exists(),
                   f"{where}: with {name} empty its start script still starts Redis")


@check("compose: each Redis requires a password, XGW_REDIS_PASSWORD, which compose demands with a profile on")
def _compose_redis_auth():
    env = {"COMPOSE_PROFILES": "redis", "XGW_REDIS_PASSWORD": TEST_PASSWORD}
    services = compose(env)["services"]
    raw = load_yaml("docker-compose.yml")["services"]
    redis = {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith("redis:")}
    expect(redis, "docker-compose.yml has no Redis service")
    try:
        compose({"COMPOSE_PROFILES": "redis"})
    except Failure as e:
        expect("XGW_REDIS_PASSWORD" in str(e), f"with the profile on and no password compose stops for another reason: {e}")
    else:
        raise Failure("with COMPOSE_PROFILES=redis and no XGW_REDIS_PASSWORD, compose starts Redis anyway")
    compose({})  # the default setup must not need the password (raises if it does)

    def as_list(value) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in (value or [])]

    def environment(svc) -> dict:
        value = svc.get("environment") or {}
        return value if isinstance(value, dict) else dict(str(e).partition("=")[::2] for e in value)

    for name, svc in redis.items():
        where = f"docker-compose.yml service {name}"
        argv = as_list(svc.get("entrypoint")) + as_list(svc.get("command"))
        redis_credentials(where, argv)
        values, sources = environment(svc), environment(raw[name])
        used = referenced_env("\n".join(argv), values)
        expect(used, f"{where}: its password does not come from its environment")
        for var in used:
            expect(re.search(r"\$\{XGW_REDIS_PASSWORD\b", str(sources.get(var, ""))) and values[var] == TEST_PASSWORD,
                   f"{where}: {var} is {sources.get(var)!r}, not XGW_REDIS_PASSWORD from .env")
        test = " ".join(as_list((svc.get("healthcheck") or {}).get("test")))
        if "redis-cli" in test:
            # redis-cli exits 0 on a NOAUTH error: only PONG proves the password works.
            expect("PONG" in test and "REDISCLI_AUTH" in values, f"{where}: its healthcheck passes without the password")
        run_redis_start(where, argv, used)


def kube_redis_containers() -> list[tuple[dict, dict]]:
    out = []
    for workload in kube("Deployment") + kube("StatefulSet"):
        for container in workload["spec"]["template"]["spec"].get("containers", []):
            if str(container.get("image", "")).startswith("redis:"):
                out.append((workload, container))
    return out


@check("kubernetes: each Redis requires a password, taken from a Secret")
def _kube_redis_auth():
    containers = kube_redis_containers()
    expect(containers, "deploy/kubernetes runs no Redis")
    examples = example_secrets()
    for workload, container in containers:
        where = f"deploy/kubernetes {workload['kind']} {workload['metadata']['name']}"
        env = {e["name"]: e for e in container.get("env", [])}
        argv = [kube_expand(str(a), {}) for a in (container.get("command") or []) + (container.get("args") or [])]
        redis_credentials(where, argv)
        used = referenced_env("\n".join((container.get("command") or []) + (container.get("args") or [])), env)
        expect(used, f"{where}: its password does not come from its environment")
        for var in used:
            ref = (env[var].get("valueFrom") or {}).get("secretKeyRef") or {}
            expect(ref and "value" not in env[var], f"{where}: {var} is not taken from a Secret")
            expect(ref.get("key") in examples.get(ref.get("name"), {}),
                   f"{where}: secret.example.yaml shows no key {ref.get('key')!r} in Secret {ref.get('name')!r}")
        # Kubernetes substitutes $(NAME) before the shell runs: model it with the test password.
        argv = [kube_expand(str(a), {v: TEST_PASSWORD for v in used})
                for a in (container.get("command") or []) + (container.get("args") or [])]
        run_redis_start(where, argv, used)


@check("runtime-config.redis.toml: each Redis URL has a password placeholder, which the image's entrypoint fills in")
def _runtime_config_redis_auth():
    stores = {label: s for label, s in load_toml("runtime-config.redis.toml").get("key_value_store", {}).items()
              if s.get("type") == "redis"}
    expect(stores, "runtime-config.redis.toml has no Redis store")
    names = set()
    for label, store in stores.items():
        url = urlsplit(store.get("url", ""))
        expect(url.password, f"key_value_store.{label}: {store.get('url')!r} has no password, so its Redis takes anyone")
        for part in (url.username, url.password):
            if part:
                expect(REDIS_PLACEHOLDER.fullmatch(part),
                       f"key_value_store.{label}: {part!r} in its URL is a credential written into the repository, "
                       "not a ${XGW_REDIS_<NAME>} placeholder")
                names.add(part[2:-1])
    script = entrypoint_script()
    expect(script, "the image runs spin directly, which would send the placeholder itself as the password "
                   "(Spin substitutes nothing in a runtime config)")
    renderer = installed_from_context(str(PurePosixPath(final_argv()[0]).with_name("render-runtime-config.sh")))
    expect(renderer and (ROOT / renderer).is_file(), "the image has no render-runtime-config.sh beside its entrypoint")
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir, tmp_dir = Path(tmp, "bin"), Path(tmp, "tmp")
        bin_dir.mkdir()
        tmp_dir.mkdir()
        (bin_dir / "spin").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$XGW_TEST_OUT"\n')
        (bin_dir / "spin").chmod(0o755)
        out = Path(tmp, "spin-args")
        base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_dir), "XGW_TEST_OUT": str(out), "LC_ALL": "C.UTF-8"}

        def start(config: str, env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
            out.unlink(missing_ok=True)
            run = subprocess.run(["sh", str(ROOT / script), "up", "--runtime-config-file", config],
                                 env={**base, **env}, capture_output=True, text=True, timeout=30, cwd=ROOT)
            return run, (out.read_text().splitlines() if out.exists() else [])

        run, args = start("runtime-config.redis.toml", {n: TEST_PASSWORD for n in names})
        expect(run.returncode == 0, f"{script} fails on runtime-config.redis.toml: {run.stderr.strip()}")
        rendered = Path(option_value(args, "--runtime-config-file") or "")
        expect(rendered.is_absolute() and rendered.is_relative_to(tmp_dir),
               f"{script} gives Spin {rendered}, not a rendered copy under $TMPDIR")
        expect(rendered.stat().st_mode & 0o077 == 0, f"the rendered runtime config {rendered} is readable by others")
        config = tomllib.loads(rendered.read_text())
        errors = runtime_config_errors(config)
        expect(not errors, f"the rendered runtime config: {'; '.join(errors)}")
        for label in stores:
            url = urlsplit(config["key_value_store"][label]["url"])
            expect(unquote(url.password or "") == TEST_PASSWORD,
                   f"key_value_store.{label}: the rendered URL does not carry the password: {url.password!r}")
        run, args = start("runtime-config.toml", {})
        expect(run.returncode == 0 and option_value(args, "--runtime-config-file") == "runtime-config.toml",
               f"{script} does not pass runtime-config.toml to Spin untouched: {args} {run.stderr.strip()}")
        run, args = start("runtime-config.redis.toml", {})
        expect(run.returncode != 0 and not args, f"{script} starts Spin on runtime-config.redis.toml without the password")


@check("kubernetes: the SpinApp's Redis URLs come whole from a Secret, and carry a password")
def _kube_redis_urls():
    examples = example_secrets()
    stores = [s for s in spinapp()["spec"].get("runtimeConfig", {}).get("keyValueStores", []) if s.get("type") == "redis"]
    expect(stores, "the SpinApp has no Redis store")
    for store in stores:
        options = [o for o in store.get("options", []) if o.get("name") == "url"]
        expect(len(options) == 1, f"store {store['name']}: no url option")
        option = options[0]
        ref = (option.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            url = urlsplit(str(option.get("value") or ""))
            expect(url.password, f"store {store['name']}: {option.get('value')!r} has no password, so any pod that reaches its Redis can use it")
            raise Failure(f"store {store['name']}: a password written into spinapp.yaml; take the URL from a Secret (valueFrom.secretKeyRef)")
        expect("value" not in option, f"store {store['name']}: both value and valueFrom")
        url = examples.get(ref.get("name"), {}).get(ref.get("key"), "")
        expect(url, f"store {store['name']}: secret.example.yaml shows no key {ref.get('key')!r} in Secret {ref.get('name')!r}")
        parts = urlsplit(url)
        expect(parts.scheme in ("redis", "rediss") and parts.password,
               f"store {store['name']}: the example URL {url!r} carries no password")


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


@check("kubernetes: a NetworkPolicy admits only the gateway's pods to each Redis, and only on 6379")
def _kube_redis_network():
    app = spinapp()
    gateway = {SPINAPP_POD_LABEL: app["metadata"]["name"], **(app["spec"].get("podLabels") or {})}
    stranger = {"app.kubernetes.io/name": "some-other-app"}
    policies = kube("NetworkPolicy")
    containers = kube_redis_containers()
    expect(containers, "deploy/kubernetes runs no Redis")
    for workload, container in containers:
        where = f"{workload['kind']} {workload['metadata']['name']}"
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        isolating = [p for p in policies if selects(p["spec"].get("podSelector") or {}, labels)
                     and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        expect(isolating, f"{where}: no NetworkPolicy restricts who connects to it: every pod of the cluster can")
        admitted = False
        for policy in isolating:
            name = f"NetworkPolicy {policy['metadata']['name']}"
            for rule in policy["spec"].get("ingress") or []:
                peers = rule.get("from")
                expect(peers, f"{name}: an ingress rule without `from` admits every source to {where}")
                for peer in peers:
                    extra = sorted(set(peer) - {"podSelector"})
                    expect(not extra, f"{name}: admits {extra} (other namespaces or addresses) to {where}")
                    selector = peer.get("podSelector") or {}
                    expect(selects(selector, gateway), f"{name}: admits pods other than the gateway's ({selector}) to {where}")
                    expect(not selects(selector, stranger), f"{name}: its podSelector {selector} admits any pod to {where}")
                expect(rule.get("ports"), f"{name}: a rule without ports opens every port of {where}")
                for port in rule["ports"]:
                    number = ports.get(port.get("port"), port.get("port"))
                    expect(number == 6379 and port.get("protocol", "TCP") == "TCP", f"{name}: opens {port} of {where}")
                admitted = True
        expect(admitted, f"{where}: its NetworkPolicy admits nobody, the gateway included")


@check("kubernetes: the SpinApp sets inbound_keys (caller keys) from its Secret; the example shows name:key[:budget[:scopes]]")
def _kube_inbound_keys():
    by_name = {v["name"]: v for v in spinapp()["spec"].get("variables", [])}
    expect("inbound_keys" in manifest_variables(), "spin.toml has no variable inbound_keys")
    variable = by_name.get("inbound_keys")
    expect(variable, "the SpinApp does not set inbound_keys: without caller keys any pod of the cluster can spend credits")
    ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
    expect(ref and "value" not in variable, f"inbound_keys must come from a Secret, is {variable}")
    token = ((by_name.get("api_token", {}).get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
    expect(ref.get("name") == token, f"inbound_keys comes from Secret {ref.get('name')!r}, the token from {token!r}")
    expect(not ref.get("optional"), "inbound_keys is optional: a Secret without it would run the gateway open")
    example = example_secrets().get(ref["name"], {}).get(ref.get("key"))
    expect(example, f"secret.example.yaml shows no {ref.get('key')!r} in Secret {ref['name']!r}")
    for entry in example.split(","):
        parts = entry.strip().split(":")
        expect(len(parts) >= 2 and re.fullmatch(r"[A-Za-z0-9_-]{1,32}", parts[0]), f"example caller entry {entry!r}: not name:key")
        if parts[1] == "sha256":
            expect(len(parts) >= 3 and re.fullmatch(r"[0-9a-f]{64}|<[^>]*>", parts[2]), f"example caller entry {entry!r}: bad digest")
            rest = parts[3:]
        else:
            expect(len(parts[1]) >= 16 and not re.search(r"\s", parts[1]), f"example caller entry {entry!r}: a key of under 16 characters")
            rest = parts[2:]
        expect(not rest or re.fullmatch(r"\d+|-", rest[0]), f"example caller entry {entry!r}: its budget is not a number")
        scopes = r"all|(?:detect|tag|search|metrics)(?:\+(?:detect|tag|search|metrics))*"
        expect(len(rest) < 2 or re.fullmatch(scopes, rest[1]), f"example caller entry {entry!r}: unknown scopes")
        expect(len(rest) <= 2, f"example caller entry {entry!r}: more fields than name:key:budget:scopes")


# (label, pattern whose group 1 is the value that must be a placeholder)
LITERAL_PATTERNS = [
    ("a password in a Redis URL", re.compile(r"\brediss?://[^\s:@/\"'`]*:([^\s@/\"'`]+)@")),
    # --requirepass x, a YAML list (- --requirepass / - x), a JSON array, a config line
    ("a requirepass value", re.compile(r"(?:--|^[ \t#]*)requirepass[\"']?(?:[ \t=]+|\s*\n[ \t]*-[ \t]+|\s*,\s*)(\S+)", re.M)),
    ("an ACL password", re.compile(r"^[ \t]*user[ \t]+\S+[ \t][^\n]*?(?:\bon\b|\boff\b|\breset\w*)[^\n]*?[ \t]>(\S+)", re.M)),
    ("the Redis password variable", re.compile(r"(?<![{\w])(?:XGW_REDIS_[A-Z0-9_]*PASSWORD|REDISCLI_AUTH)[ \t]*[=:][ \t]*(\S*)")),
]


def password_literals(text: str) -> list[tuple[int, str, str]]:
    """(line, what, value) of every committed-looking Redis password in `text`."""
    hits = []
    for what, pattern in LITERAL_PATTERNS:
        for m in pattern.finditer(text):
            if not is_placeholder(m.group(1)):
                hits.append((text.count("\n", 0, m.start(1)) + 1, what, m.group(1)))
    return hits


def repository_files() -> list[str]:
    """Tracked and new (not ignored) files; .env and build output stay out."""
    run = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, timeout=60) if (ROOT / ".git").exists() and shutil.which("git") else None
    if run is not None and run.returncode == 0:
        return sorted({f for f in run.stdout.decode().split("\0") if f and (ROOT / f).is_file()})
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                  if p.is_file() and not {".git", "target", ".spin"} & set(p.relative_to(ROOT).parts) and p.name != ".env")


@check("no Redis password is committed (URLs, requirepass, ACL rules, its variables; example Secrets hold placeholders)")
def _no_password_literals():
    hits = []
    for rel in repository_files():
        if rel == "tests/deploy/check_deploy.py":
            continue  # its own test strings
        data = (ROOT / rel).read_bytes()
        if b"\0" in data[:8192] or len(data) > 4_000_000:
            continue
        text = data.decode("utf-8", errors="replace")
        hits += [f"{rel}:{line}: {what} {value!r}" for line, what, value in password_literals(text)]
        if rel.startswith("deploy/") and rel.endswith((".yaml", ".yml")):
            for doc in load_yaml_docs(rel):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    name = doc.get("metadata", {}).get("name")
                    if doc.get("data"):
                        hits.append(f"{rel}: Secret {name} has data (base64 is no protection): use placeholders in stringData")
                    for key, value in (doc.get("stringData") or {}).items():
                        if not is_placeholder(str(value)) and not re.search(r"<[^>]+>", str(value)):
                            hits.append(f"{rel}: Secret {name} key {key} holds {str(value)!r}, not a placeholder")
    expect(not hits, "committed secrets:\n      " + "\n      ".join(hits))


@check("secret detectors and label selectors (self-test)")
def _secret_self_test():
    bad = ["url = \"redis://:hunter2hunter2@redis-cache:6379\"", "      - --requirepass\n      - s3cret-value",
           "requirepass s3cret-value", "user default on >s3cret-value ~* +@all", "XGW_REDIS_PASSWORD=s3cret-value",
           "REDISCLI_AUTH: s3cret-value", "rediss://gw:s3cret-value@cache.example:6380"]
    good = ["url = \"redis://:${XGW_REDIS_PASSWORD}@redis-cache:6379\"", "redis://:$pw@host:6379", "# XGW_REDIS_PASSWORD=\n",
            "REDISCLI_AUTH: ${XGW_REDIS_PASSWORD:-x}", "redis://:put-the-redis-password-here@h:6379", "redis://secret@host",
            "user default on resetpass #$$hash ~* &* +@all", "XGW_REDIS_PASSWORD=<openssl rand -hex 32>", "redis://h:6379"]
    for text in bad:
        expect(password_literals(text), f"the detector misses {text!r}")
    for text in good:
        expect(not password_literals(text), f"the detector flags {text!r}: {password_literals(text)}")
    expect(selects({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}) and not selects({"matchLabels": {"a": "1"}}, {"a": "2"}), "matchLabels")
    expect(selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}), "In")
    expect(not selects({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}), "Exists")
    expect(selects({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}), "DoesNotExist")
    expect(selects({}, {"x": "y"}), "an empty selector selects everything")
    for argv in (["redis-server", "--maxmemory", "1mb"], ["sh", "-c", "user default on ~* +@all", "x"]):
        try:
            redis_credentials("self-test", argv)
        except Failure:
            pass
        else:
            raise Failure(f"the credential reader accepts {argv}, which has no password")
    expect(redis_credentials("self-test", ["sh", "-c", "user default on #$h ~* +@all"]) == ["$h"], "ACL hash rule")


# ----------------------------------------------------------------------------- healthcheck and docs


@check("deploy/healthcheck: standalone crate; its tests pass (cargo test)")
def _healthcheck():
    cargo_toml = load_toml("deploy/healthcheck/Cargo.toml")
    expect(cargo_toml.get("package", {}).get("name") == "healthcheck", "package name should be healthcheck")
    expect("workspace" in cargo_toml, "deploy/healthcheck/Cargo.toml needs its own [workspace] table")
    expect(not cargo_toml.get("dependencies"), "the probe should stay std-only")
    exe = shutil.which("cargo")
    if exe is None:
        if IN_CI:
            raise Failure("cargo is not on PATH")
        raise Skip("cargo is not on PATH")
    run = subprocess.run(
        [exe, "test", "--quiet", "--locked", "--manifest-path", "deploy/healthcheck/Cargo.toml"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    expect(run.returncode == 0, f"cargo test of deploy/healthcheck failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")


@check("docs/operations.md: names the volume, image and commands the files define")
def _operations_doc():
    text = read("docs/operations.md")
    volume = (compose().get("volumes") or {}).get("state") or {}
    name = volume.get("name") if isinstance(volume, dict) else None
    expect(name and name in text, f"docs/operations.md does not name the state volume {name!r}")
    for needle in (SPIN_IMAGE, "docker compose logs", "XGW_TAG=previous", "COMPOSE_PROFILES=redis",
                   "XGW_RUNTIME_CONFIG=runtime-config.redis.toml", "WORKERS", "Retry-After",
                   "allkeys-lru", "noeviction", "FLUSHDB", "XGW_REDIS_PASSWORD", "rediss://"):
        expect(needle in text, f"docs/operations.md does not mention {needle!r}")
    for host, _ in redis_store_urls().values():
        expect(host in text, f"docs/operations.md does not name the Redis service {host!r}")


def main() -> int:
    passed = failed = skipped = 0
    for name, fn in CHECKS:
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"skip  {name}: {e}")
        except Failure as e:
            failed += 1
            print(f"FAIL  {name}: {e}")
        except Exception as e:  # a malformed file: report it, keep going
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
        else:
            passed += 1
            print(f"ok    {name}")
    if skipped:
        print(f"({skipped} skipped: their tools are missing here; with CI=true that is a failure)")
    print(f"deploy checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
