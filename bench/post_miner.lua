-- POST /api/miners for `hashinsight bench api`: every request adds one unit of a random model
-- of the seeded catalogue (ids 1..49) for the next bench user in turn. The users' bearer
-- tokens are in the file named after `--`, one a line; no Idempotency-Key (each request is a
-- new write).
--
--   cd bench && wrk -t2 -c16 -d10s -s post_miner.lua http://127.0.0.1:8080 -- tokens.txt
done = require("wrk_report")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_index", threads)
end

local tokens = {}
local next_token = 1

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then tokens[#tokens + 1] = "Bearer " .. line end
  end
  assert(#tokens > 0, "no tokens in " .. args[1])
  local index = thread_index or 1
  next_token = (index * 7919) % #tokens + 1  -- the threads start at different users
  math.randomseed(index)
end

function request()
  local token = tokens[next_token]
  next_token = next_token % #tokens + 1
  local body = string.format('{"model_id": %d, "quantity": 1}', math.random(1, 49))
  return wrk.format("POST", "/api/miners",
                    {["Authorization"] = token, ["Content-Type"] = "application/json"}, body)
end
