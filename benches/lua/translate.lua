-- The nginx-lua peer of benches/load.sh: patchbay's Sweet Spot PATCH written as a plugin for nginx's Lua
-- module (lua-nginx-module, the engine Kong's plugins run on), with lua-cjson. It does patchbay's work for
-- that provider: the request checks (404 path, 405, 400 id, 415, 413, 400 not a JSON object, 422 every bad
-- field at once, strict or `Prefer: handling=lenient`), the canonical → Sweet Spot translation (E.164
-- phone, upper-cased ISO country, null/"" clear), one upstream call through nginx's keep-alive pool (the
-- internal location /_sweetspot/ in load.sh adds the bearer key), and the answer back to canonical.
-- It passes patchbay's Sweet Spot fixture cases (tests/fixtures/sweetspot: calls, bodies, answers, errors).
-- Not done: refusing duplicate keys and invalid UTF-8, rate limits, per-customer locks, canonical member
-- order in the answer (cjson orders keys as it likes), the problem `type` and `title`, a problem body for
-- the 413 (nginx's own page), patchbay's finer mapping of upstream failures (401/403/5xx are all 502 here).
local cjson = require "cjson.safe"
cjson.decode_invalid_numbers(false)
local null = cjson.null

local FIELDS = { first_name = "firstName", last_name = "lastName", phone = "phone" }
local ADDRESS = { line1 = "address1", line2 = "address2", city = "city", state = "state",
  postal_code = "zip", country = "country" }
local UNSTORED = { company_name = "field", email = "field", website = "field", status = "field",
  shipping_address = "address" }
local READ_ONLY = { id = true, provider = true, created_at = true, updated_at = true }
local PROVIDERS = { sweetspot = true, count = true, juice = true, sparklayer = true }
local RESERVED = { id = true, createdAt = true, updatedAt = true }
local TO_CANONICAL = {}
for canonical, wire in pairs(FIELDS) do RESERVED[wire] = true; TO_CANONICAL[wire] = canonical end
for part, wire in pairs(ADDRESS) do RESERVED[wire] = true; TO_CANONICAL[wire] = "billing_address." .. part end
local UPSTREAM_STATUS = { [400] = 422, [422] = 422, [404] = 404, [409] = 409, [429] = 429 }
local COUNTRIES = {}
for code in ("AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS "
  .. "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER "
  .. "ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE "
  .. "IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA "
  .. "MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM "
  .. "PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR "
  .. "SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU "
  .. "WF WS YE YT ZA ZM ZW"):gmatch("%u%u") do COUNTRIES[code] = true end

local function respond(body)
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

local function problem(status, detail, errors, upstream_status)
  ngx.status = status
  ngx.header["Content-Type"] = "application/problem+json"
  if status == 405 then ngx.header["Allow"] = "GET, PATCH" end
  respond(cjson.encode({ status = status, detail = detail, errors = errors,
    provider = upstream_status and "sweetspot", upstream_status = upstream_status }))
end

-- A string to store, nil to clear (null or ""), or false when the value is not a string.
local function text(value)
  if value == null or value == "" then return nil end
  return type(value) == "string" and value
end

local function too_long(s) -- more than 255 characters (counted only when there are 256 bytes)
  return #s > 255 and select(2, s:gsub("[^\128-\191]", "")) > 255
end

local function phone(s) -- E.164 once separators are gone: `+`, then 8-15 digits, the first not 0
  local compact = s:gsub("[ %-%.%(%)]", "")
  local digits = compact:match("^%+([1-9]%d*)$")
  return digits and #digits >= 8 and #digits <= 15 and compact
end

local function string_change(path, value, bad) -- the wire value, or nil after reporting a bad one
  local v = text(value)
  if v == nil then return null end
  if v == false then return bad(path, "must be a string or null") end
  if too_long(v) then return bad(path, "must be at most 255 characters") end
  return v
end

-- The Sweet Spot PUT body for a canonical patch, or nil and the field errors; `skipped` gathers what a
-- lenient request drops.
local function translate(patch, lenient, skipped)
  local body, errors, raw = {}, {}, {}
  local function bad(field, message) errors[#errors + 1] = { field = field, message = message } end
  for key, value in pairs(patch) do
    if FIELDS[key] then
      local v = string_change(key, value, bad)
      if v and v ~= null and key == "phone" then
        v = phone(v) or bad(key, "must be an E.164 phone number: `+`, then 8 to 15 digits, the first not 0")
      end
      if v then body[FIELDS[key]] = v end
    elseif key == "billing_address" then
      if value == null then
        for _, wire in pairs(ADDRESS) do body[wire] = null end
      elseif type(value) ~= "table" then bad(key, "must be an object or null")
      else
        for part, part_value in pairs(value) do
          local path = key .. "." .. tostring(part)
          local v = ADDRESS[part] and string_change(path, part_value, bad)
          if not ADDRESS[part] then bad(path, "is not a canonical address field")
          elseif v and v ~= null and part == "country" then
            v = COUNTRIES[v:upper()] and v:upper() or bad(path, "must be an ISO 3166-1 alpha-2 country code")
          end
          if v then body[ADDRESS[part]] = v end
        end
      end
    elseif key == "provider_fields" then
      if type(value) ~= "table" then bad(key, "must be an object keyed by provider") else
        for provider, fields in pairs(value) do
          local path = "provider_fields." .. tostring(provider)
          if not PROVIDERS[provider] then bad(path, "is not a known provider")
          elseif type(fields) ~= "table" then bad(path, "must be an object of upstream fields")
          elseif provider == "sweetspot" then
            for k, v in pairs(fields) do
              if RESERVED[k] then bad(path .. "." .. k, "is managed by patchbay: write it through its canonical field")
              else body[k] = v; raw[k] = true end
            end
          end
        end
      end
    elseif READ_ONLY[key] then bad(key, "is read-only and cannot be patched")
    elseif not UNSTORED[key] then bad(key, "is not a canonical customer field")
    elseif lenient then skipped[#skipped + 1] = key
    else bad(key, "sweetspot cannot store this " .. UNSTORED[key]) end
  end
  if #errors > 0 then return nil, errors end
  return body, raw
end

local function canon(value) -- an upstream value as canonical: "" (an empty field) and absent are null
  if value == nil or value == "" then return null end
  return value
end

local function to_canonical(record)
  local customer = { id = "sweetspot:" .. (type(record.id) == "string" and record.id or ""),
    provider = "sweetspot", created_at = canon(record.createdAt), updated_at = canon(record.updatedAt) }
  for canonical, wire in pairs(FIELDS) do customer[canonical] = canon(record[wire]) end
  local address, any = {}, false
  for part, wire in pairs(ADDRESS) do
    address[part] = canon(record[wire])
    any = any or address[part] ~= null
  end
  customer.billing_address = any and address or null
  for key in pairs(RESERVED) do record[key] = nil end
  customer.provider_fields = { sweetspot = record }
  return customer
end

local function serve()
  local method = ngx.req.get_method()
  local id = ngx.var.uri:match("^/customers/sweetspot:(.*)$")
  if not id then return problem(404, "no such route: this peer serves /customers/sweetspot:{id}") end
  if method ~= "PATCH" and method ~= "GET" then return problem(405, method .. " is not supported here") end
  if #id > 64 or not id:find("^[%w_-]+$") then
    return problem(400, "invalid sweetspot id", { { field = "id", message = "must match [A-Za-z0-9_-]{1,64}" } })
  end
  local body, raw, skipped = {}, {}, {}
  if method == "PATCH" then
    local essence = (ngx.var.content_type or ""):match("^[^;]*"):match("^%s*(.-)%s*$"):lower()
    if essence ~= "application/merge-patch+json" and essence ~= "application/json" then
      return problem(415, "send the patch with `Content-Type: application/merge-patch+json`")
    end
    ngx.req.read_body() -- client_max_body_size answers 413 beyond the limit
    local data = ngx.req.get_body_data()
    if not data and ngx.req.get_body_file() then return problem(413, "the body is larger than the limit") end
    local patch, err = cjson.decode(data or "")
    if patch == nil then return problem(400, "the body is not valid JSON: " .. err) end
    if type(patch) ~= "table" or not data:find("^%s*{") then return problem(400, "the body must be a JSON object") end
    local prefer = ngx.var.http_prefer
    local lenient = prefer and prefer:lower():find("handling%s*=%s*\"?lenient") ~= nil
    body, raw = translate(patch, lenient, skipped)
    if not body then return problem(422, "the patch is not valid for sweetspot", raw) end
    if lenient then ngx.header["Preference-Applied"] = "handling=lenient" end
    if #skipped > 0 then ngx.header["Patchbay-Skipped"] = table.concat(skipped, ", ") end
  end
  local write = next(body) ~= nil -- `{}` (or nothing left once skipped) writes nothing: a read
  local res = ngx.location.capture((write and "/_sweetspot/" or "/_sweetspot_read/") .. "v1/customers/" .. id,
    { method = write and ngx.HTTP_PUT or ngx.HTTP_GET, body = write and cjson.encode(body) or nil })
  local record = cjson.decode(res.body or "")
  if res.status < 200 or res.status > 299 then
    local err = type(record) == "table" and type(record.error) == "table" and record.error or {}
    local param = type(err.param) == "string" and err.param
    local field = param and (raw[param] and "provider_fields.sweetspot." .. param or TO_CANONICAL[param] or param)
    local message = type(err.message) == "string" and err.message or nil
    return problem(UPSTREAM_STATUS[res.status] or 502, "sweetspot answered " .. res.status,
      field and { { field = field, message = message or "was refused by Sweet Spot" } } or nil, res.status)
  end
  if type(record) ~= "table" then return problem(502, "sweetspot answered a body that is not a customer record") end
  ngx.header["Content-Type"] = "application/json"
  respond(cjson.encode(to_canonical(record)))
end

return { serve = serve }
