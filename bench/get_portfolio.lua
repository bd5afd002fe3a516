-- GET /api/portfolio for `hashinsight bench api`, rotating over the bench users so that the
-- limiter and the cache see many users. Their bearer tokens are in the file named after `--`,
-- one a line. The requests are formatted once, in init(): the load generator shares the cores
-- with the API, so it should spend as little of them as it can.
--
--   cd bench && wrk -t2 -c64 -d10s -s get_portfolio.lua http://127.0.0.1:8080 -- tokens.txt
done = require("wrk_report")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_index", threads)
end

local requests = {}
local next_request = 1

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] =
          wrk.format("GET", "/api/portfolio", {["Authorization"] = "Bearer " .. line})
    end
  end
  assert(#requests > 0, "no tokens in " .. args[1])
  next_request = ((thread_index or 1) * 7919) % #requests + 1
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
