"""The Redis ledger: each operation is one atomic Lua script (one round trip), so any number of gateway
replicas share exact budgets. Reads always go to Redis (no local copy). Keys: `<prefix>:task:<id>` hashes
with fields `l:<metric>` (limit), `s:<metric>` (spent), `r:<metric>` (reserved), `parent`; windows are
`<prefix>:win:<key>:<start>` counters with an expiry.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis.asyncio as aioredis

from agentgw.budget.ledger import METRICS, Amount, Rejection, Reservation, TaskState

# KEYS: this reservation's record (what it reserved, so a reply lost to a crash can be undone), then the chain's
# task hashes. ARGV: ttl, rest metric ('' for none), chain text (for a new task), the number of
# limit pairs, the limit pairs (metric, limit) for a new chain[1], then metric/amount pairs.
_RESERVE = """
local CH = {}
for i = 2, #KEYS do CH[i - 1] = KEYS[i] end
local ttl, rest, chain_text = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local nlimits = tonumber(ARGV[4])
local first = 5 + nlimits * 2
if redis.call('HEXISTS', CH[1], 'opened') == 0 then
  redis.call('HSET', CH[1], 'opened', '1', 'chain', chain_text)
  for j = 5, first - 1, 2 do redis.call('HSET', CH[1], 'l:' .. ARGV[j], ARGV[j + 1]) end
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
for j = first, #ARGV, 2 do asked[ARGV[j]] = tonumber(ARGV[j + 1]); table.insert(order, ARGV[j]) end
if rest ~= '' then
  local least = nil
  for _, key in ipairs(CH) do
    local r = left(key, rest)
    if r ~= nil and (least == nil or r < least) then least = r end
  end
  if asked[rest] == nil then asked[rest] = 0; table.insert(order, rest) end
  if least ~= nil and least >= asked[rest] then asked[rest] = least end
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
local out = {0}
for _, m in ipairs(order) do table.insert(out, m); table.insert(out, asked[m]) end
for _, key in ipairs(CH) do
  for _, m in ipairs(order) do
    if asked[m] ~= 0 then redis.call('HINCRBY', key, 'r:' .. m, asked[m]) end
  end
  redis.call('EXPIRE', key, ttl)
end
for _, m in ipairs(order) do
  if asked[m] ~= 0 then redis.call('HSET', KEYS[1], m, asked[m]) end
end
redis.call('EXPIRE', KEYS[1], 3600)
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
"""

# KEYS: the idempotency key, then the chain's task hashes. ARGV: ttl, then metric/reserved/actual triples.
# A settle retried after a lost reply is applied once; a task Redis no longer has (restarted without
# persistence) is left alone rather than recreated with a negative reservation.
_SETTLE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) == false then return 1 end
local ttl = tonumber(ARGV[1])
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    for j = 2, #ARGV, 3 do
      local m, r, a = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
      if r ~= 0 then redis.call('HINCRBY', key, 'r:' .. m, -r) end
      if a ~= 0 then redis.call('HINCRBY', key, 's:' .. m, a) end
    end
    redis.call('EXPIRE', key, ttl)
  end
end
return 0
"""

# KEYS: the reservation's record, then the chain. Gives back exactly what that reservation took, once.
_UNDO = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    for j = 1, #fields, 2 do redis.call('HINCRBY', KEYS[i], 'r:' .. fields[j], -tonumber(fields[j + 1])) end
  end
end
redis.call('DEL', KEYS[1])
return 1
"""

_HIT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if count + amount > limit then return 0 end
redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local v = redis.call('INCRBY', KEYS[1], ARGV[1])
  if v < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
return 0
"""


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
        self._hit = self.client.register_script(_HIT)
        self._undo = self.client.register_script(_UNDO)
        self._adjust = self.client.register_script(_ADJUST)

    def _key(self, task: str) -> str:
        return f"{self.prefix}:task:{task}"

    async def reserve(
        self, chain: list[str], amount: Amount, limits: Amount, rest: str | None = None, op: str | None = None
    ) -> Reservation | Rejection:
        args: list[Any] = [self.ttl, rest or "", "\n".join(chain[1:]), len(limits)]
        for metric, limit in limits.items():
            args += [metric, limit]
        for metric, n in amount.items():
            args += [metric, n]
        record = f"{self.prefix}:res:{op or secrets.token_hex(12)}"
        out = await self._reserve(keys=[record, *(self._key(t) for t in chain)], args=args)
        if int(out[0]) != 0:
            i, metric, limit, spent, reserved, asked = out
            return Rejection(
                chain[int(i) - 1], str(metric), int(limit), int(spent), int(reserved), int(asked)
            )
        bar = out.index("|")
        got = {str(out[k]): int(out[k + 1]) for k in range(1, bar, 2)}
        remaining = {str(out[k]): int(out[k + 1]) for k in range(bar + 1, len(out), 2)}
        return Reservation(got, remaining)

    async def settle(self, chain: list[str], reserved: Amount, actual: Amount, op: str | None = None) -> None:
        args: list[Any] = [self.ttl]
        for metric in METRICS:
            r, a = reserved.get(metric, 0), actual.get(metric, 0)
            if r or a:
                args += [metric, r, a]
        once = f"{self.prefix}:op:{op or secrets.token_hex(12)}"
        await self._settle(keys=[once, *(self._key(t) for t in chain)], args=args)

    async def release(self, chain: list[str], reserved: Amount, op: str | None = None) -> None:
        await self.settle(chain, reserved, {}, op)

    async def state(self, task: str) -> TaskState | None:
        raw: dict[str, str] = await self.client.hgetall(self._key(task))
        if not raw:
            return None
        st = TaskState(task, chain=[c for c in raw.get("chain", "").split("\n") if c])
        for field_name, value in raw.items():
            kind, _, metric = field_name.partition(":")
            target = {"l": st.limits, "s": st.spent, "r": st.reserved}.get(kind)
            if target is not None and metric:
                target[metric] = int(value)
        return st

    async def undo(self, chain: list[str], op: str) -> None:
        await self._undo(keys=[f"{self.prefix}:res:{op}", *(self._key(t) for t in chain)], args=[])

    async def forget(self, task: str) -> None:
        await self.client.delete(self._key(task), f"{self.prefix}:kids:{task}")

    async def link(self, parent: str, child: str) -> None:
        key = f"{self.prefix}:kids:{parent}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, child)
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def children(self, task: str) -> list[str]:
        return [str(c) for c in await self.client.lrange(f"{self.prefix}:kids:{task}", 0, -1)]

    async def hit(self, key: str, amount: int, limit: int, window_s: int) -> tuple[bool, float]:
        now = time.time()
        start = int(now // window_s) * window_s
        ok = await self._hit(keys=[f"{self.prefix}:win:{key}:{start}"], args=[amount, limit, window_s + 5])
        return bool(ok), start + window_s - now

    async def adjust(self, key: str, amount: int, window_s: int) -> None:
        start = int(time.time() // window_s) * window_s
        await self._adjust(keys=[f"{self.prefix}:win:{key}:{start}"], args=[amount])

    async def aclose(self) -> None:
        await self.client.aclose()
