-- migrate: move the 0.x data of some accounts of one shard into their account hashes
-- (_legacy.lua); the reaper calls it for accounts found in the 0.x deadline index or by its
-- audit walk.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua)
-- for account i (i = 1..n): its own keys (AccountKeys.own, nth_account), its id
-- ARGV[i]
-- Returns how many accounts had 0.x data.
local moved = 0
for i = 1, #ARGV do
  moved = moved + migrate(nth_account(ARGV[i], i))
end
return moved
