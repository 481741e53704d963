-- wrk script for bench/ratelimit.sh: web-service calls that rotate over the tokens given after
-- `--`, tallying every status and, per token, the calls that reached the upstream (whose body
-- echoes the token: {"ok":true,"wstoken":"..."}). done() prints one line per figure:
--   status <code> <count>
--   admitted <token> <count>

local tokens = {}
local n = 0
local path = "/webservice/rest/server.php?wsfunction=core_webservice_get_site_info&moodlewsrestformat=json&wstoken="

-- Globals: done() reads them from each thread with thread:get().
counts = {}
admitted = {}

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   -- wrk hands over the URL and the words after `--`; keep those that look like tokens.
   for i = 0, #args do
      local a = args[i]
      if a and #a == 32 and a:match("^%x+$") then
         tokens[#tokens + 1] = a
      end
   end
   if #tokens == 0 then
      error("ws.lua: pass the tokens after --")
   end
end

function request()
   n = n + 1
   return wrk.format("GET", path .. tokens[(n % #tokens) + 1])
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   if status == 200 then
      local t = body:match('"wstoken":"(%x+)"')
      if t then
         admitted[t] = (admitted[t] or 0) + 1
      end
   end
end

function done(summary, latency, requests)
   local status, adm = {}, {}
   for _, thread in ipairs(threads) do
      for k, v in pairs(thread:get("counts") or {}) do
         status[k] = (status[k] or 0) + v
      end
      for k, v in pairs(thread:get("admitted") or {}) do
         adm[k] = (adm[k] or 0) + v
      end
   end
   for k, v in pairs(status) do
      io.write(string.format("status %s %d\n", tostring(k), v))
   end
   for k, v in pairs(adm) do
      io.write(string.format("admitted %s %d\n", k, v))
   end
end
