"""The Redis ledger: each operation is one atomic Lua script (one round trip), so any number of gateway
replicas share exact budgets. Reads always go to Redis (no local copy). Keys: `<prefix>:task:<id>` hashes
with fields `l:<metric>` (limit), `s:<metric>` (spent), `r:<metric>` (reserved), `parent`; windows are
`<prefix>:win:<key>:<start>` counters with an expiry.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from agentgw.budget.ledger import METRICS, Amount, Rejection, TaskState

# KEYS: the chain's task hashes. ARGV: ttl, then metric/amount pairs.
_RESERVE = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  for j = 2, #ARGV, 2 do
    local m, asked = ARGV[j], tonumber(ARGV[j + 1])
    if asked > 0 then
      local limit = tonumber(redis.call('HGET', key, 'l:' .. m) or '-1')
      if limit >= 0 then
        local spent = tonumber(redis.call('HGET', key, 's:' .. m) or '0')
        local reserved = tonumber(redis.call('HGET', key, 'r:' .. m) or '0')
        if spent + reserved + asked > limit then
          return {i, m, limit, spent, reserved, asked}
        end
      end
    end
  end
end
for _, key in ipairs(KEYS) do
  for j = 2, #ARGV, 2 do
    local asked = tonumber(ARGV[j + 1])
    if asked ~= 0 then redis.call('HINCRBY', key, 'r:' .. ARGV[j], asked) end
  end
  redis.call('EXPIRE', key, ttl)
end
return 0
"""

# ARGV: ttl, then metric/reserved/actual triples.
_SETTLE = """
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  for j = 2, #ARGV, 3 do
    local m, r, a = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    if r ~= 0 then redis.call('HINCRBY', key, 'r:' .. m, -r) end
    if a ~= 0 then redis.call('HINCRBY', key, 's:' .. m, a) end
  end
  redis.call('EXPIRE', key, ttl)
end
return 0
"""

# KEYS[1]: the task. ARGV: ttl, parent ('' for none), then metric/limit pairs. Only the first open sets limits.
_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'opened') == 0 then
  redis.call('HSET', KEYS[1], 'opened', '1')
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'parent', ARGV[2]) end
  for j = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], 'l:' .. ARGV[j], ARGV[j + 1]) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 0
"""

_HIT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if count + amount > limit then return 0 end
redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
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
        self._open = self.client.register_script(_OPEN)
        self._hit = self.client.register_script(_HIT)

    def _key(self, task: str) -> str:
        return f"{self.prefix}:task:{task}"

    async def open(self, task: str, limits: Amount, parent: str | None) -> None:
        args: list[Any] = [self.ttl, parent or ""]
        for metric, limit in limits.items():
            args += [metric, limit]
        await self._open(keys=[self._key(task)], args=args)

    async def reserve(self, chain: list[str], amount: Amount) -> Rejection | None:
        args: list[Any] = [self.ttl]
        for metric, asked in amount.items():
            args += [metric, asked]
        out = await self._reserve(keys=[self._key(t) for t in chain], args=args)
        if out == 0:
            return None
        i, metric, limit, spent, reserved, asked = out
        return Rejection(chain[int(i) - 1], str(metric), int(limit), int(spent), int(reserved), int(asked))

    async def settle(self, chain: list[str], reserved: Amount, actual: Amount) -> None:
        args: list[Any] = [self.ttl]
        for metric in METRICS:
            r, a = reserved.get(metric, 0), actual.get(metric, 0)
            if r or a:
                args += [metric, r, a]
        await self._settle(keys=[self._key(t) for t in chain], args=args)

    async def release(self, chain: list[str], reserved: Amount) -> None:
        await self.settle(chain, reserved, {})

    async def state(self, task: str) -> TaskState | None:
        raw: dict[str, str] = await self.client.hgetall(self._key(task))
        if not raw:
            return None
        st = TaskState(task, parent=raw.get("parent"))
        for field_name, value in raw.items():
            kind, _, metric = field_name.partition(":")
            target = {"l": st.limits, "s": st.spent, "r": st.reserved}.get(kind)
            if target is not None and metric:
                target[metric] = int(value)
        return st

    async def hit(self, key: str, amount: int, limit: int, window_s: int) -> tuple[bool, float]:
        now = time.time()
        start = int(now // window_s) * window_s
        ok = await self._hit(keys=[f"{self.prefix}:win:{key}:{start}"], args=[amount, limit, window_s + 5])
        return bool(ok), start + window_s - now

    async def aclose(self) -> None:
        await self.client.aclose()
