"""The Redis ledger: a reserve is one atomic Lua script and a settle is another (one round trip each, windows,
child tasks and forgetting included), so any number of gateway replicas share exact budgets. Reads always go
to Redis (no local copy). Keys under `<prefix>:`: `task:<id>` hashes (fields `l:<metric>` limit, `s:<metric>`
spent, `r:<metric>` reserved, `chain`), `kids:<id>` lists, `win:<key>:<start>` window counters, and `res:<op>`
records of the reservations not settled yet (deleted by their settle), all with an expiry.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from agentgw.budget.ledger import (
    ANCESTRY_WALK,
    METRICS,
    Amount,
    LedgerListing,
    Loop,
    Rejection,
    Reservation,
    TaskState,
    Throttled,
    TooDeep,
    Window,
)
from agentgw.budget.listing import redis_listing, task_state
from agentgw.budget.resp import ScriptRunner

# KEYS: this reservation's record (what it took, so a reply lost to a crash can be undone), the chain's task hashes,
# the windows' counters, then (with a child) the child's hash and chain[1]'s list of children.
# ARGV: ttl, rest metric ('' for none), chain text (for a new chain[1]), chain length, window count, child name
# ('' for none), child chain text, the number of limit pairs, the task keys' prefix, the most to take of the rest
# metric (-1: no bound), extend ('1': add to the reservation whose record is KEYS[1], on its opened chain; {-3} if
# that record is gone), the deepest chain[1] may sit below its root (-1: no bound), the limit pairs (metric, limit) for a new chain[1], the windows' (amount, limit, expiry)
# triples, then metric/amount pairs.
# Returns {-4, depth} when chain[1] would sit deeper than allowed (its chain's length, or one more than the ancestors
# recorded for chain[2], whichever is more), {-2, i} when chain[i] would be its own ancestor (named twice, or chain[1] among the recorded ancestors
# of the tasks it names: calls that raced may each have named a parent that did not exist yet), {-1, i} when
# window i is full, {i, metric, limit, spent, reserved, asked} when chain[i] cannot afford it, else
# {0, metric, amount, …, '|', metric, least left, …}. Nothing is written unless everything fits.
_RESERVE = """
local ttl, rest, chain_text = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local nchain, nwin, child, child_text = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local nlimits, task_prefix, most, extend = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10]), ARGV[11] == '1'
local max_depth = tonumber(ARGV[12])
local CH, WIN = {}, {}
for i = 1, nchain do CH[i] = KEYS[1 + i] end
if extend and redis.call('EXISTS', KEYS[1]) == 0 then return {-3} end
if nchain > 1 and not extend and max_depth >= 0 then
  -- Before the loop walk, so a long chain costs no reads: the chain given, then the ancestors recorded.
  if nchain - 1 > max_depth then return {-4, nchain - 1} end
  local text, recorded = redis.call('HGET', CH[2], 'chain'), 0
  if text then for _ in string.gmatch(text, '[^\\n]+') do recorded = recorded + 1 end end
  if recorded + 1 > max_depth then return {-4, recorded + 1} end
end
if nchain > 1 and not extend then
  local seen, queue = {}, {}
  for i = 1, nchain do
    if seen[CH[i]] then return {-2, i} end
    seen[CH[i]] = true
    if i > 1 then queue[#queue + 1] = CH[i] end
  end
  local head = 1
  while head <= #queue and head <= nchain + WALK do
    local text = redis.call('HGET', queue[head], 'chain')
    head = head + 1
    if text then
      for name in string.gmatch(text, '[^\\n]+') do
        local key = task_prefix .. name
        if key == CH[1] then return {-2, 1} end
        if not seen[key] then seen[key] = true; queue[#queue + 1] = key end
      end
    end
  end
end
local w0 = 13 + nlimits * 2
for i = 1, nwin do
  local j = w0 + (i - 1) * 3
  WIN[i] = {KEYS[1 + nchain + i], tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])}
end
for i, w in ipairs(WIN) do
  if tonumber(redis.call('GET', w[1]) or '0') + w[2] > w[3] then return {-1, i} end
end
if nchain > 0 and not extend and redis.call('HEXISTS', CH[1], 'opened') == 0 then
  redis.call('HSET', CH[1], 'opened', '1', 'chain', chain_text)
  for j = 13, w0 - 1, 2 do redis.call('HSET', CH[1], 'l:' .. ARGV[j], ARGV[j + 1]) end
end
local function left(key, m)
  local limit = tonumber(redis.call('HGET', key, 'l:' .. m) or '-1')
  if limit < 0 then return nil end
  local spent = tonumber(redis.call('HGET', key, 's:' .. m) or '0')
  local reserved = tonumber(redis.call('HGET', key, 'r:' .. m) or '0')
  return limit - spent - reserved, limit, spent, reserved
end
local asked = {}
local order = {}
for j = w0 + nwin * 3, #ARGV, 2 do asked[ARGV[j]] = tonumber(ARGV[j + 1]); table.insert(order, ARGV[j]) end
if rest ~= '' and nchain > 0 then
  local least = nil
  for _, key in ipairs(CH) do
    local r = left(key, rest)
    if r ~= nil and (least == nil or r < least) then least = r end
  end
  if asked[rest] == nil then asked[rest] = 0; table.insert(order, rest) end
  if least ~= nil and least >= asked[rest] then
    if most >= 0 and least > most then least = math.max(most, asked[rest]) end
    asked[rest] = least
  elseif least == nil and most > asked[rest] then
    asked[rest] = most
  end
end
for i, key in ipairs(CH) do
  for _, m in ipairs(order) do
    local n = asked[m]
    if n > 0 then
      local r, limit, spent, reserved = left(key, m)
      if r ~= nil and n > r then return {i, m, limit, spent, reserved, n} end
    end
  end
end
for _, w in ipairs(WIN) do
  redis.call('INCRBY', w[1], w[2])
  redis.call('EXPIRE', w[1], w[4])
end
local out = {0}
for _, m in ipairs(order) do table.insert(out, m); table.insert(out, asked[m]) end
for _, key in ipairs(CH) do
  for _, m in ipairs(order) do
    if asked[m] ~= 0 then redis.call('HINCRBY', key, 'r:' .. m, asked[m]) end
  end
  redis.call('EXPIRE', key, ttl)
end
if nchain > 0 then
  redis.call('HSET', KEYS[1], 'op', '1')
  for _, w in ipairs(WIN) do redis.call('HINCRBY', KEYS[1], 'w:' .. w[1], w[2]) end
  for _, m in ipairs(order) do
    if asked[m] ~= 0 then redis.call('HINCRBY', KEYS[1], m, asked[m]) end
  end
  redis.call('EXPIRE', KEYS[1], ttl)
end
if child ~= '' then
  local hash, kids = KEYS[2 + nchain + nwin], KEYS[3 + nchain + nwin]
  redis.call('HSET', hash, 'opened', '1', 'chain', child_text)
  redis.call('EXPIRE', hash, ttl)
  redis.call('RPUSH', kids, child)
  redis.call('EXPIRE', kids, ttl)
end
table.insert(out, '|')
local remaining = {}
for _, key in ipairs(CH) do
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 2) == 'l:' then
      local m = string.sub(f, 3)
      local r = left(key, m)
      if r ~= nil and (remaining[m] == nil or r < remaining[m]) then remaining[m] = r end
    end
  end
end
for m, r in pairs(remaining) do table.insert(out, m); table.insert(out, math.max(0, r)) end
return out
""".replace("WALK", str(ANCESTRY_WALK))

# KEYS: the reservation's record, the chain's task hashes, the windows' counters, then (to forget chain[1]) its
# list of children. ARGV: ttl, chain length, window count, forget ('1' or '0'), guarded ('1': settle only if the
# record is still there, and delete it), the windows' corrections, then metric/reserved/actual triples.
# Guarded, a settle retried after a lost reply (or after an undo) is applied at most once, and leaves no key
# behind; it gives back what the record says the reservation took (its top-ups included, even one whose reply was
# lost), not the caller's figure. A task Redis no longer has (restarted without persistence) is left alone rather than recreated with
# a negative reservation.
_SETTLE = """
local ttl, nchain, nwin, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local R, A, order = {}, {}, {}
for j = 6 + nwin, #ARGV, 3 do
  local m = ARGV[j]
  R[m], A[m] = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  table.insert(order, m)
end
if ARGV[5] == '1' then
  local rec = redis.call('HGETALL', KEYS[1])
  if #rec == 0 then return 1 end
  redis.call('DEL', KEYS[1])
  for _, m in ipairs(order) do R[m] = 0 end
  for j = 1, #rec, 2 do
    local f = rec[j]
    if f ~= 'op' and string.sub(f, 1, 2) ~= 'w:' then
      if A[f] == nil then A[f] = 0; table.insert(order, f) end
      R[f] = tonumber(rec[j + 1])
    end
  end
end
for i = 2, 1 + nchain do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    for _, m in ipairs(order) do
      local r, a = R[m], A[m]
      if r ~= 0 then redis.call('HINCRBY', key, 'r:' .. m, -r) end
      if a ~= 0 then redis.call('HINCRBY', key, 's:' .. m, a) end
    end
    redis.call('EXPIRE', key, ttl)
  end
end
for i = 1, nwin do
  local key = KEYS[1 + nchain + i]
  if redis.call('EXISTS', key) == 1 then
    local v = redis.call('INCRBY', key, ARGV[5 + i])
    if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
if forget == '1' then redis.call('DEL', KEYS[2], KEYS[2 + nchain + nwin]) end
return 0
"""

# KEYS: the reservation's record, the chain, then the window counters the record names. ARGV: chain length.
# Gives back exactly what that reservation took, once.
_UNDO = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return 0 end
local nchain = tonumber(ARGV[1])
for j = 1, #fields, 2 do
  local f, n = fields[j], tonumber(fields[j + 1])
  if f == 'op' then
    -- the record's own marker
  elseif string.sub(f, 1, 2) == 'w:' then
    local key = string.sub(f, 3)
    if redis.call('EXISTS', key) == 1 then
      local v = redis.call('DECRBY', key, n)
      if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    end
  else
    for i = 2, 1 + nchain do
      if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'r:' .. f, -n) end
    end
  end
end
redis.call('DEL', KEYS[1])
return 1
"""


_RESET = (
    "if Redis restarts without its data, every task's spending and reservations are reset and budgets start "
    "again from zero. Turn on appendonly yes (or RDB snapshots) for budgets that survive a restart."
)


class RedisLedger:
    def __init__(
        self, url: str, prefix: str = "agentgw", task_ttl_s: int = 86400, max_connections: int = 64
    ) -> None:
        # A blocking pool: under a burst, calls wait briefly for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
        )
        self.client: Any = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix
        self.ttl = task_ttl_s
        self._reserve = self.client.register_script(_RESERVE)
        self._settle = self.client.register_script(_SETTLE)
        self._undo = self.client.register_script(_UNDO)
        # The two scripts of every call go over plain connections (redis-py costs ~110 µs of CPU per command).
        self.fast = ScriptRunner(url, max_connections) if ScriptRunner.supports(url) else None

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self.fast is not None:
            return await self.fast.run(script, keys, args)
        return await script(keys=keys, args=args)

    def _key(self, task: str) -> str:
        return f"{self.prefix}:task:{task}"

    def _kids(self, task: str) -> str:
        return f"{self.prefix}:kids:{task}"

    def _window(self, w: Window, now: float) -> str:
        return f"{self.prefix}:win:{w.key}:{int(now // w.seconds) * w.seconds}"

    async def reserve(
        self,
        chain: list[str],
        amount: Amount,
        limits: Amount,
        rest: str | None = None,
        op: str | None = None,
        windows: Sequence[Window] = (),
        child: str | None = None,
        most: int | None = None,
        max_depth: int | None = None,
    ) -> Reservation | Rejection | Throttled | Loop | TooDeep:
        got = await self._reserve_op(chain, amount, limits, rest, op, windows, child, most, False, max_depth)
        assert got is not None  # only an extension finds its reservation gone
        return got

    async def extend(
        self,
        chain: list[str],
        amount: Amount,
        rest: str,
        most: int,
        op: str | None = None,
        windows: Sequence[Window] = (),
    ) -> Reservation | Rejection | Throttled | None:
        if not chain or op is None:  # without its record there is no reservation to add to
            return None
        got = await self._reserve_op(chain, amount, {}, rest, op, windows, None, most, True)
        # The script checks no loop or depth when extending (the reservation checked the chain).
        assert not isinstance(got, (Loop, TooDeep))
        return got

    async def _reserve_op(
        self,
        chain: list[str],
        amount: Amount,
        limits: Amount,
        rest: str | None,
        op: str | None,
        windows: Sequence[Window],
        child: str | None,
        most: int | None,
        extend: bool,
        max_depth: int | None = None,
    ) -> Reservation | Rejection | Throttled | Loop | TooDeep | None:
        """The reserve script: a reservation, or (`extend`) a top-up of reservation `op`."""
        now = time.time()
        child_name = child if child is not None and chain else ""
        args: list[Any] = [self.ttl, rest or "", "\n".join(chain[1:]), len(chain), len(windows)]
        args += [child_name, "\n".join(chain), len(limits), self._key(""), -1 if most is None else most]
        args += ["1" if extend else "0", -1 if max_depth is None else max_depth]
        for metric, limit in limits.items():
            args += [metric, limit]
        for w in windows:
            args += [w.amount, w.limit, w.seconds + 5]
        for metric, n in amount.items():
            args += [metric, n]
        keys = [f"{self.prefix}:res:{op or secrets.token_hex(12)}", *(self._key(t) for t in chain)]
        keys += [self._window(w, now) for w in windows]
        if child_name:
            keys += [self._key(child_name), self._kids(chain[0])]
        out = await self._run(self._reserve, keys, args)
        if int(out[0]) == -3:
            return None
        if int(out[0]) == -4:
            return TooDeep(chain[0], int(out[1]))
        if int(out[0]) == -2:
            return Loop(chain[int(out[1]) - 1])
        if int(out[0]) < 0:
            w = windows[int(out[1]) - 1]
            return Throttled(w, int(now // w.seconds) * w.seconds + w.seconds - now)
        if int(out[0]) > 0:
            i, metric, limit, spent, reserved, asked = out
            return Rejection(
                chain[int(i) - 1], str(metric), int(limit), int(spent), int(reserved), int(asked)
            )
        bar = out.index("|")
        got = {str(out[k]): int(out[k + 1]) for k in range(1, bar, 2)}
        remaining = {str(out[k]): int(out[k + 1]) for k in range(bar + 1, len(out), 2)}
        return Reservation(got, remaining)

    async def settle(
        self,
        chain: list[str],
        reserved: Amount,
        actual: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        now = time.time()
        forget = forget and bool(chain)
        args: list[Any] = [self.ttl, len(chain), len(windows), "1" if forget else "0", "1" if op else "0"]
        args += [w.amount for w in windows]
        for metric in METRICS:
            r, a = reserved.get(metric, 0), actual.get(metric, 0)
            if r or a:
                args += [metric, r, a]
        keys = [f"{self.prefix}:res:{op or '-'}", *(self._key(t) for t in chain)]
        keys += [self._window(w, now) for w in windows]
        if forget:
            keys.append(self._kids(chain[0]))
        await self._run(self._settle, keys, args)

    async def release(
        self,
        chain: list[str],
        reserved: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        await self.settle(chain, reserved, {}, op, windows, forget)

    async def state(self, task: str) -> TaskState | None:
        raw: dict[str, str] = await self.client.hgetall(self._key(task))
        return task_state(task, raw) if raw else None

    async def listing(self, limit: int, principal: str | None = None) -> LedgerListing:
        return await redis_listing(self.client, self.prefix, limit, principal)

    async def undo(self, chain: list[str], op: str) -> None:
        record = f"{self.prefix}:res:{op}"
        taken: dict[str, str] = await self.client.hgetall(record)  # a recovery path: one extra round trip
        if not taken:
            return
        windows = [f[2:] for f in taken if f.startswith("w:")]
        await self._undo(keys=[record, *(self._key(t) for t in chain), *windows], args=[len(chain)])

    async def children(self, task: str) -> list[str]:
        return [str(c) for c in await self.client.lrange(self._kids(task), 0, -1)]

    async def persistence(self) -> tuple[bool | None, str | None]:
        """Append-only files or RDB snapshots configured (CONFIG GET; INFO when CONFIG is renamed away)."""
        try:
            async with asyncio.timeout(3):  # a start-time check: never holds startup longer
                try:
                    save = (await self.client.config_get("save")).get("save", "")
                    aof = (await self.client.config_get("appendonly")).get("appendonly", "no")
                except aioredis.ResponseError:  # CONFIG disabled (managed Redis): INFO tells about AOF only
                    info = await self.client.info("persistence")
                    save, aof = None, "yes" if info.get("aof_enabled") else "no"
        except Exception as exc:
            return None, f"could not check Redis persistence ({type(exc).__name__}); {_RESET}"
        if aof == "yes" or save:
            return True, None
        if save is None:
            return None, f"Redis has appendonly no and does not say whether it saves snapshots; {_RESET}"
        return False, f'Redis has no persistence (appendonly no, save ""): {_RESET}'

    async def aclose(self) -> None:
        if self.fast is not None:
            self.fast.aclose_idle()
        await self.client.aclose()
