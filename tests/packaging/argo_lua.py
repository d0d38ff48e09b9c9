"""Run Argo CD resource-customization Lua (health checks, actions) the way Argo CD runs it.

Argo CD evaluates these scripts in gopher-lua (Lua 5.1) with `obj` as a global and, unless
`resource.customizations.useOpenLibs.<group>_<Kind>` is set, only the base, table and package
libraries plus a safe `os` holding `time` and `date` (argo-cd util/lua/lua.go, oslib_safe.go).
Here they run on LuaJIT 2.1 (`lupa.luajit21`) in that same environment: the script is a chunk
whose environment (`setfenv`) holds exactly those globals, and the string metatable's `__index`
is hidden during the call, so `string.upper(s)` and `s:upper()` fail here as they would there.

The results come back as Argo CD reads them: a health table is checked against Argo's status
codes (an unknown one becomes Unknown), an action's object goes through gopher-json's rules (an
empty table is an empty array) and Argo's `cleanReturnedObj` (an empty array where the input had
an object becomes that object again). YAML test data is read as sigs.k8s.io/yaml does:
timestamps stay strings.

Differences left: no 1-second timeout; `pairs` order may differ from gopher-lua's; time is
frozen (`FROZEN_TIME`) so that actions using `os.date` have a fixed expected output.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lupa.luajit21 as lupa
import yaml

#: Argo CD's health status codes (gitops-engine pkg/health); anything else becomes Unknown.
HEALTH_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)
#: What `os.time()` returns and `os.date()` formats by default: 2026-01-02T03:04:05Z.
FROZEN_TIME = 1767323045

_RUNNER = """
local base_names = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget",
  "rawset", "select", "getmetatable", "setmetatable", "tonumber", "tostring", "type",
  "unpack", "xpcall", "_VERSION",
}
local table_names = {"concat", "insert", "maxn", "remove", "sort", "getn"}
local real_date, real_time = os.date, os.time
local string_mt = getmetatable("")

return function(source, chunkname, obj, open_libs, now)
  local chunk, err = loadstring(source, "=" .. chunkname)
  if not chunk then
    error(err, 0)
  end
  local safe_os = {
    time = function(t) if t == nil then return now end return real_time(t) end,
    date = function(fmt, t) return real_date(fmt, t or now) end,
  }
  local env
  if open_libs then
    env = setmetatable({}, {__index = _G})
  else
    env = {}
    for _, name in ipairs(base_names) do env[name] = _G[name] end
    env.table = {}
    for _, name in ipairs(table_names) do env.table[name] = table[name] end
  end
  env.os = safe_os
  env.require = function(name)
    if name == "os" then return safe_os end
    error("module '" .. tostring(name) .. "' not found", 2)
  end
  env._G = env
  env.obj = obj
  setfenv(chunk, env)
  local string_index = string_mt.__index
  if not open_libs then
    string_mt.__index = nil
  end
  local ok, result = pcall(chunk)
  string_mt.__index = string_index
  if not ok then
    error(result, 0)
  end
  return result
end
"""


class LuaScriptError(AssertionError):
    """The script failed, or returned something Argo CD would reject."""


class _NoTimestampLoader(yaml.SafeLoader):
    """PyYAML's safe loader without the timestamp type: sigs.k8s.io/yaml keeps them strings."""


_NoTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: Path) -> Any:
    """The first YAML document of a file, as Argo CD's tests read test data."""
    with path.open(encoding="utf-8") as f:
        return next(yaml.load_all(f, Loader=_NoTimestampLoader))


class ArgoLua:
    """One Lua runtime that evaluates scripts as Argo CD would."""

    def __init__(self, *, open_libs: bool = False, now: int = FROZEN_TIME) -> None:
        self.open_libs = open_libs
        self.now = now
        self._lua = lupa.LuaRuntime(
            register_eval=False, register_builtins=False, unpack_returned_tuples=False
        )
        self._run = self._lua.execute(_RUNNER)

    def run(self, script: Path | str, obj: Mapping[str, Any]) -> Any:
        """Run a script with `obj` as its global; returns its result as Python data."""
        source = script.read_text(encoding="utf-8") if isinstance(script, Path) else script
        name = script.name if isinstance(script, Path) else "script"
        try:
            result = self._run(source, name, self._to_lua(obj), self.open_libs, self.now)
        except lupa.LuaError as exc:
            raise LuaScriptError(f"{name}: {exc}") from None
        return _from_lua(result)

    def health(self, script: Path | str, obj: Mapping[str, Any]) -> dict[str, str] | None:
        """`ExecuteHealthLua`: a table with a valid status, else Unknown; nil means no health."""
        result = self.run(script, obj)
        if result is None:
            return None
        if not isinstance(result, dict):
            raise LuaScriptError(f"expect table output from Lua script, not {result!r}")
        health = {k: str(v) for k, v in result.items() if k in ("status", "message")}
        if health.get("status") not in HEALTH_STATUSES:
            return {"status": "Unknown", "message": "Lua returned an invalid health status"}
        return health

    def discovery(self, script: Path | str, obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """`ExecuteResourceActionDiscovery`: action name -> its settings (disabled, ...)."""
        result = self.run(script, obj)
        if not isinstance(result, dict):
            raise LuaScriptError(f"discovery must return a table of actions, not {result!r}")
        return {str(name): dict(spec) for name, spec in result.items()}

    def action(self, script: Path | str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """`ExecuteResourceAction` for an action returning the modified object."""
        result = self.run(script, obj)
        if not isinstance(result, dict):
            raise LuaScriptError(f"an action must return the object, not {result!r}")
        cleaned: dict[str, Any] = _clean_returned(result, obj)
        return cleaned

    def _to_lua(self, value: Any) -> Any:
        """Python data as Lua values: dicts and lists become tables (lists 1-based), None nil."""
        if isinstance(value, Mapping):
            table = self._lua.table()
            for key, item in value.items():
                if item is not None:
                    table[key] = self._to_lua(item)
            return table
        if isinstance(value, list | tuple):
            table = self._lua.table()
            for index, item in enumerate(value, start=1):
                table[index] = self._to_lua(item)
            return table
        return value


def _from_lua(value: Any) -> Any:
    """Lua values as gopher-json encodes them: a table with keys 1..n (or none) is an array."""
    if lupa.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
        return [_from_lua(items[i]) for i in range(1, len(items) + 1)]
    return {str(k): _from_lua(v) for k, v in items.items()}


def _clean_returned(new: Any, old: Any) -> Any:
    """Argo CD's cleanReturnedObj: Lua cannot tell an empty object from an empty array, so an
    empty array where the input had an object becomes that object again."""
    if isinstance(new, dict) and isinstance(old, Mapping):
        return {k: _clean_returned(v, old[k]) if k in old else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, Mapping) and not new:
        return dict(old)
    if isinstance(new, list) and isinstance(old, list):
        return [_clean_returned(n, o) for n, o in zip(new, old, strict=False)] + new[len(old) :]
    return new
