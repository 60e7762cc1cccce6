-- memux.lua: a Wireshark / tshark dissector for the memux protocol,
-- version 1 (doc/spec.rst in the memux repository is the reference; the
-- section names in comments below are its).
--
-- Use:   tshark -X lua_script:contrib/wireshark/memux.lua -r capture.pcap -V
-- or copy this file into Wireshark's personal Lua plugins folder
-- (Help > About Wireshark > Folders), e.g. ~/.local/lib/wireshark/plugins/.
--
-- It decodes each side's preface (magic, version, settings) and every
-- frame (type byte, flags, channel, length and the payload fields of each
-- type, the PRIORITY extension frame's urgency and weight among them),
-- follows channel ids (the service a channel was opened for, the frame
-- that opened it, which side opened it), and flags malformed input
-- with expert info naming the error code a memux receiver would send,
-- and PRIORITY frames sent to a peer that did not announce
-- PRIORITY_HINTS = 1 (or before its preface).
-- Frames split across TCP segments are reassembled; several frames in one
-- segment are each shown.  memux is found on the TCP port of the
-- preference "memux.tcp_port" (7400, twistd memux's default), on any port
-- by the preface magic (heuristic), and inside TLS whose ALPN is memux/1
-- (only if Wireshark can decrypt it: give it the keys, e.g. with
-- tls.keylog_file); TLS on memux's port is handed to Wireshark's TLS
-- dissector.  A PROXY protocol header (HAProxy's send-proxy and
-- send-proxy-v2) in front of the preface is shown with the client address
-- it gives.  doc/operations.rst, "Looking at traffic with Wireshark",
-- tells more.
--
-- Tested with tshark 4.0 (Lua 5.2); written for the Lua 5.4 of Wireshark
-- 4.2 and later too: no bit32, 64-bit values as UInt64.

local memux = Proto("memux", "memux multiplexing protocol")

local MAGIC = "\137MUX\r\n\26\n"
local MAX_SETTINGS_BLOCK = 1024
local MAX_PING_PAYLOAD = 64
local MAX_NAME_LENGTH = 255
local DEFAULT_MAX_FRAME_SIZE = 16384

-- ------------------------------------------------------------ names

local frame_types = {
    [0x0] = "DATA", [0x1] = "OPEN", [0x2] = "CREDIT", [0x3] = "RESET",
    [0x4] = "PING", [0x5] = "GOAWAY", [0x6] = "CHANNELS", [0x7] = "DROP",
    [0x8] = "reserved 0x8", [0x9] = "reserved 0x9", [0xA] = "reserved 0xA",
    [0xB] = "reserved 0xB", [0xC] = "reserved 0xC", [0xD] = "reserved 0xD",
    [0xE] = "reserved 0xE", [0xF] = "EXTENSION",
}

-- spec: "Error codes"
local error_codes = {
    [0x0] = "NO_ERROR", [0x1] = "PROTOCOL_ERROR", [0x2] = "INTERNAL_ERROR",
    [0x3] = "FLOW_CONTROL_ERROR", [0x4] = "CHANNEL_LIMIT_ERROR",
    [0x5] = "FRAME_SIZE_ERROR", [0x6] = "REFUSED", [0x7] = "CANCEL",
    [0x8] = "MESSAGE_TOO_LARGE", [0x9] = "UNSUPPORTED_VERSION",
    [0xA] = "EXCESSIVE_LOAD", [0xB] = "SETTINGS_ERROR", [0xC] = "IDLE_TIMEOUT",
    [0xD] = "CONNECT_ERROR",
}

-- spec: "Settings": id -> name, lower bound (= initial value), upper bound.
local MAX_VARINT = UInt64(0xFFFFFFFF, 0x7FFFFFFF)
local settings = {
    [1] = { name = "MAX_FRAME_SIZE", low = 16384, high = UInt64(16777215) },
    [2] = { name = "INITIAL_CHANNEL_CREDIT", low = 65536, high = MAX_VARINT },
    [3] = { name = "INITIAL_SESSION_CREDIT", low = 262144, high = MAX_VARINT },
    [4] = { name = "INITIAL_MAX_CHANNELS", low = 100, high = MAX_VARINT },
    [5] = { name = "MAX_MESSAGE_SIZE", low = 0, high = MAX_VARINT },
    [6] = { name = "PRIORITY_HINTS", low = 0, high = UInt64(1) },
}
local LAST_SETTING = 6

-- spec: "Priority hints": the extended type of PRIORITY, and its ranges.
local EXT_PRIORITY = 1
local MAX_URGENCY = 7
local MAX_WEIGHT = 256

-- a UInt64 in hexadecimal, without leading zeros
local function hex(u)
    return (u:tohex():gsub("^0+(.)", "%1"))
end

local function code_name(code)
    -- code: a UInt64
    return error_codes[code:tonumber()] or ("UNKNOWN(0x" .. hex(code) .. ")")
end

-- ------------------------------------------------------------ fields

local f = {
    magic = ProtoField.bytes("memux.magic", "Magic", base.SPACE),
    version = ProtoField.uint64("memux.version", "Version", base.DEC),
    settings_length = ProtoField.uint64("memux.settings_length", "Settings length", base.DEC),
    setting = ProtoField.none("memux.setting", "Setting"),
    setting_id = ProtoField.uint64("memux.setting.id", "Setting id", base.DEC),
    setting_value = ProtoField.uint64("memux.setting.value", "Value", base.DEC),

    type_byte = ProtoField.uint8("memux.type_byte", "Type byte", base.HEX),
    type = ProtoField.uint8("memux.type", "Type", base.HEX, frame_types, 0xF0),
    flags = ProtoField.uint8("memux.flags", "Flags", base.HEX, nil, 0x0F),
    flag_end = ProtoField.bool("memux.flags.end", "END", 8, nil, 0x01),
    flag_fin = ProtoField.bool("memux.flags.fin", "FIN", 8, nil, 0x02),
    flag_open = ProtoField.bool("memux.flags.open", "OPEN", 8, nil, 0x04),
    flag_metadata = ProtoField.bool("memux.flags.metadata", "METADATA", 8, nil, 0x01),
    flag_destination = ProtoField.bool("memux.flags.destination", "DESTINATION", 8, nil, 0x02),
    flag_lossy = ProtoField.bool("memux.flags.lossy", "LOSSY", 8, nil, 0x04),
    flag_ack = ProtoField.bool("memux.flags.ack", "ACK", 8, nil, 0x01),
    flag_reserved = ProtoField.uint8("memux.flags.reserved", "Reserved flags", base.HEX),
    channel = ProtoField.uint64("memux.channel", "Channel", base.DEC),
    length = ProtoField.uint64("memux.length", "Length", base.DEC),

    -- followed channel ids (generated)
    service_of = ProtoField.string("memux.channel.service", "Service of the channel"),
    opened_in = ProtoField.framenum("memux.channel.opened_in", "Channel opened in frame"),
    opener = ProtoField.string("memux.channel.opener", "Opened by"),

    data = ProtoField.bytes("memux.data", "Data"),
    service_length = ProtoField.uint64("memux.open.service_length", "Service length", base.DEC),
    service = ProtoField.string("memux.open.service", "Service"),
    metadata_length = ProtoField.uint64("memux.open.metadata_length", "Metadata length", base.DEC),
    metadata = ProtoField.bytes("memux.open.metadata", "Metadata"),
    host_length = ProtoField.uint64("memux.open.host_length", "Host length", base.DEC),
    host = ProtoField.string("memux.open.host", "Destination host"),
    port = ProtoField.uint64("memux.open.port", "Destination port", base.DEC),
    credit_limit = ProtoField.uint64("memux.credit.limit", "Limit", base.DEC),
    reset_code = ProtoField.uint64("memux.reset.code", "Code", base.DEC),
    reset_reason = ProtoField.string("memux.reset.reason", "Reason"),
    ping_payload = ProtoField.bytes("memux.ping.payload", "Payload"),
    goaway_last = ProtoField.uint64("memux.goaway.last_channel", "Last channel", base.DEC),
    goaway_code = ProtoField.uint64("memux.goaway.code", "Code", base.DEC),
    goaway_reason = ProtoField.string("memux.goaway.reason", "Reason"),
    channels_limit = ProtoField.uint64("memux.channels.limit", "Limit", base.DEC),
    drop_count = ProtoField.uint64("memux.drop.count", "Count", base.DEC),
    extended_type = ProtoField.uint64("memux.extended_type", "Extended type", base.DEC),
    priority_urgency = ProtoField.uint64("memux.priority.urgency", "Urgency", base.DEC),
    priority_weight = ProtoField.uint64("memux.priority.weight", "Weight", base.DEC),
    payload = ProtoField.bytes("memux.payload", "Payload"),
    proxy_source = ProtoField.string("memux.proxy.source", "Client (PROXY header)"),
    proxy_destination = ProtoField.string("memux.proxy.destination", "Address the client reached (PROXY header)"),
    undecoded = ProtoField.bytes("memux.undecoded", "Not decoded"),
}
local field_list = {}
for _, field in pairs(f) do
    field_list[#field_list + 1] = field
end
memux.fields = field_list

local ef = {
    malformed = ProtoExpert.new("memux.malformed", "Malformed memux input",
        expert.group.MALFORMED, expert.severity.ERROR),
    violation = ProtoExpert.new("memux.violation", "memux protocol violation",
        expert.group.PROTOCOL, expert.severity.ERROR),
    error_code = ProtoExpert.new("memux.error_code", "memux error code",
        expert.group.RESPONSE_CODE, expert.severity.WARN),
    reserved_flags = ProtoExpert.new("memux.reserved_flags", "Reserved flag bits set (ignored)",
        expert.group.PROTOCOL, expert.severity.NOTE),
    ignored = ProtoExpert.new("memux.ignored", "Frame of a reserved type (ignored by version 1 receivers)",
        expert.group.PROTOCOL, expert.severity.CHAT),
    no_preface = ProtoExpert.new("memux.no_preface", "No memux preface at the start of this direction",
        expert.group.SEQUENCE, expert.severity.NOTE),
    -- a MUST NOT broken, but harmless: the receiver ignores the frame
    unannounced = ProtoExpert.new("memux.priority.unannounced",
        "PRIORITY sent to a peer that did not announce PRIORITY_HINTS = 1",
        expert.group.PROTOCOL, expert.severity.WARN),
}
memux.experts = { ef.malformed, ef.violation, ef.error_code, ef.reserved_flags, ef.ignored, ef.no_preface,
    ef.unannounced }

-- ------------------------------------------------------------ preferences

local DEFAULT_PORT = 7400
memux.prefs.tcp_port = Pref.uint("TCP port", DEFAULT_PORT,
    "TCP port decoded as memux (twistd memux listens on 7400 by default); 0 for none")
memux.prefs.heuristic = Pref.bool("Find memux on any port by its preface magic", true,
    "Try the memux heuristic on TCP connections whose port is not registered")

-- ------------------------------------------------------------ conversation state

-- conversations["a:p|b:p"] (the two ends, sorted) = {
--   client = "addr:port" or nil (learnt from the SYN, or from the first
--            opening frame's parity),
--   dirs = { ["addr:port"] = direction state },
--   channels = { [channel id (number)] = { service=, frame= } },
-- }
-- A direction's state: whether its preface was decoded (and in which
-- frame), its announced MAX_FRAME_SIZE and PRIORITY_HINTS (nil until a
-- well-formed preface states or implies it), the highest channel id it
-- opened of each parity, since
-- which frame it is broken (after a header error nobody can find the next
-- frame), and what the first pass found at each "frame:offset" (a kind of
-- item, or the more bytes it asked for), for later passes to repeat.
-- Keyed by addresses, not tcp.stream: a pass without a tree (tshark -2,
-- Wireshark's first) does not fill in fields for Lua to read.
local conversations = {}

local function endpoint_key(addr, port)
    return tostring(addr) .. ":" .. tostring(port)
end

-- inside: the memux inside a TLS session on this TCP connection (called by
-- the TLS dissector), rather than the bytes on the connection
local conversation
function conversation(pinfo, inside)
    local a = endpoint_key(pinfo.src, pinfo.src_port)
    local b = endpoint_key(pinfo.dst, pinfo.dst_port)
    local key = a < b and (a .. "|" .. b) or (b .. "|" .. a)
    if inside then key = key .. "|tls" end
    local conv = conversations[key]
    if conv == nil then
        conv = { dirs = {}, channels = {} }
        conversations[key] = conv
        if inside then
            -- the connection's roles and start are the TLS session's
            local outer = conversation(pinfo, false)
            conv.client, conv.syn = outer.client, outer.syn
        end
    end
    return conv
end

local function direction(conv, key)
    local ds = conv.dirs[key]
    if ds == nil then
        ds = { prefaced = false, max_frame = DEFAULT_MAX_FRAME_SIZE, highest = { [0] = 0, [1] = 0 }, at = {} }
        conv.dirs[key] = ds
    end
    return ds
end

-- The conversation each packet was dissected in on the first pass, for
-- later passes: a connection that reuses the addresses of an earlier one
-- (ports are reused) has a conversation of its own.
local packet_conversations = {}

local function conversation_of(pinfo, inside)
    local key = pinfo.number .. (inside and "|tls" or "")
    if pinfo.visited and packet_conversations[key] then
        return packet_conversations[key]
    end
    local conv = conversation(pinfo, inside)
    packet_conversations[key] = conv
    return conv
end

-- A SYN starts a connection, and a conversation: the client is the side
-- that sent it, and the bytes that follow are the connection's first.
local syn_tap = Listener.new("tcp", "tcp.flags.syn == 1 && tcp.flags.ack == 0")
function syn_tap.packet(pinfo)
    local conv = conversation(pinfo)
    if conv.syn ~= nil or next(conv.dirs) ~= nil then
        -- a new connection between the same addresses and ports
        local a = endpoint_key(pinfo.src, pinfo.src_port)
        local b = endpoint_key(pinfo.dst, pinfo.dst_port)
        local key = a < b and (a .. "|" .. b) or (b .. "|" .. a)
        conversations[key], conversations[key .. "|tls"] = nil, nil
        conv = conversation(pinfo)
    end
    conv.syn = pinfo.number
    conv.client = endpoint_key(pinfo.src, pinfo.src_port)
end

function memux.init()
    conversations = {}
    packet_conversations = {}
end

-- ------------------------------------------------------------ decoding helpers

-- Decode a varint at off, not reading at or past limit.  Returns
-- value (UInt64), size, problem: problem is nil, "short" (limit reached
-- before the varint ended), "long" (nine bytes with bit 7 set) or
-- "overlong" (not in its shortest form).  spec: "Varint encoding"
local function varint(tvb, off, limit)
    local value = UInt64(0)
    for i = 0, 8 do
        if off + i >= limit then
            return nil, i, "short"
        end
        local b = tvb(off + i, 1):uint()
        value = value + UInt64(b % 128):lshift(7 * i)
        if b < 0x80 then
            if b == 0 and i > 0 then
                return value, i + 1, "overlong"
            end
            return value, i + 1, nil
        end
    end
    return nil, 9, "long"
end

local varint_problems = {
    long = "varint longer than nine bytes",
    overlong = "varint not in its shortest form",
}

local function valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local k
        if c < 0x80 then k = 0
        elseif c >= 0xC2 and c <= 0xDF then k = 1
        elseif c >= 0xE0 and c <= 0xEF then k = 2
        elseif c >= 0xF0 and c <= 0xF4 then k = 3
        else return false end
        if i + k > n then return false end
        for j = 1, k do
            local d = s:byte(i + j)
            if d < 0x80 or d > 0xBF then return false end
        end
        local d = s:byte(i + 1)
        if (c == 0xE0 and d < 0xA0) or (c == 0xED and d > 0x9F)
            or (c == 0xF0 and d < 0x90) or (c == 0xF4 and d > 0x8F) then
            return false
        end
        i = i + k + 1
    end
    return true
end

-- s as text for display: itself if it is UTF-8, else with each byte that
-- is not printable ASCII as \xHH (Wireshark's outputs must stay UTF-8).
local function display(s)
    if valid_utf8(s) then return s end
    return (s:gsub("[^\32-\126]", function(c) return string.format("\\x%02x", c:byte()) end))
end

-- A range of n bytes at off, or (n == 0) nil: Wireshark's Lua does not
-- take empty ranges everywhere.
local function rng(tvb, off, n)
    if n > 0 then return tvb(off, n) end
    return nil
end

local function add(tree, field, tvb, off, n, value)
    local r = rng(tvb, off, n)
    if r ~= nil then
        return tree:add(field, r, value)
    end
    return tree:add(field, value)
end

local function printable(s, limit)
    s = s:gsub("[^\32-\126]", ".")
    if #s > limit then s = s:sub(1, limit) .. "..." end
    return s
end

-- A frame payload reader: fields in [off, limit) of tvb; the first problem
-- found is kept in r.problem (the message and the code a receiver sends).
local Reader = {}
Reader.__index = Reader

local function reader(tvb, off, limit)
    return setmetatable({ tvb = tvb, off = off, limit = limit }, Reader)
end

function Reader:fail(code, message)
    if self.problem == nil then
        self.problem = code .. ": " .. message
    end
end

function Reader:varint(tree, field, what)
    local value, size, problem = varint(self.tvb, self.off, self.limit)
    if problem == "short" then
        self:fail("PROTOCOL_ERROR", what .. " runs past the frame")
        self.off = self.limit
        return nil
    elseif problem then
        self:fail("PROTOCOL_ERROR", varint_problems[problem])
        if value == nil then
            self.off = self.limit
            return nil
        end
    end
    local item = tree:add(field, self.tvb(self.off, size), value)
    self.off = self.off + size
    return value, item
end

-- a length-prefixed byte string; returns its offset, length (nil if it does
-- not fit)
function Reader:bytes(tree, length_field, what, bound)
    local n = self:varint(tree, length_field, what .. " length")
    if n == nil then return nil end
    if bound and n > UInt64(bound) then
        self:fail("PROTOCOL_ERROR", string.format("%s of %s bytes exceeds %d", what, tostring(n), bound))
        return nil
    end
    if n > UInt64(self.limit - self.off) then
        self:fail("PROTOCOL_ERROR", what .. " runs past the frame")
        return nil
    end
    local at = self.off
    self.off = self.off + n:tonumber()
    return at, n:tonumber()
end

function Reader:text(tree, field, what, at, n)
    local s = n > 0 and self.tvb(at, n):raw() or ""
    local item = add(tree, field, self.tvb, at, n, display(s))
    if not valid_utf8(s) then
        self:fail("PROTOCOL_ERROR", what .. " is not valid UTF-8")
    end
    return s, item
end

function Reader:rest()
    return self.limit - self.off
end

-- ------------------------------------------------------------ the preface

-- What a stream that does not start with the magic looks like (as memux
-- says in its error), so that a misdirected client is recognised.
local function describe_foreign(head)
    if head:sub(1, 1) == "\22" then
        return "a TLS handshake (TLS to a port that does not speak it?)"
    elseif head:sub(1, 2) == "\21\3" then
        return "a TLS alert (TLS to a port that does not speak it?)"
    elseif head:sub(1, 12) == "PRI * HTTP/2" then
        return "an HTTP/2 preface"
    elseif head:sub(1, 4) == "SSH-" then
        return "an SSH banner"
    end
    local word = head:match("^(%S+) ") or ""
    for _, method in ipairs({ "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "CONNECT" }) do
        if word == method then return "an HTTP/1 request" end
    end
    if head:sub(1, 5) == "HTTP/" then return "an HTTP/1 response" end
    return "bytes " .. (head:sub(1, 8):gsub(".", function(c) return string.format("%02x ", c:byte()) end)):sub(1, -2)
end

-- spec: "Preface".  Returns the bytes used, or a negative number when more
-- are needed (-1: one more segment).
local function dissect_preface(tvb, pinfo, tree, off, ds, info)
    local len = tvb:len()
    local limit = len
    local pos = off + #MAGIC
    if len < pos then return -1 end
    local version, vsize, vproblem = varint(tvb, pos, limit)
    if vproblem == "short" then return -1 end
    local blen, bsize, bproblem
    if version ~= nil then
        blen, bsize, bproblem = varint(tvb, pos + vsize, limit)
        if bproblem == "short" then return -1 end
    end
    local total
    local unframed = not (blen ~= nil and not bproblem and blen <= UInt64(MAX_SETTINGS_BLOCK))
    if not unframed then
        total = #MAGIC + vsize + bsize + blen:tonumber()
        if off + total > len then
            return -(off + total - len)
        end
    else
        -- a malformed preface: show what can be shown, up to here
        total = #MAGIC + vsize + (bsize or 0)
    end

    local item = tree:add(memux, tvb(off, total), "memux preface")
    item:add(f.magic, tvb(off, #MAGIC))
    local problem
    if vproblem then
        problem = "PROTOCOL_ERROR: " .. varint_problems[vproblem]
    end
    if version ~= nil then
        local vitem = item:add(f.version, tvb(pos, vsize), version)
        if version == UInt64(0) then
            problem = problem or "UNSUPPORTED_VERSION: peer announces memux version 0"
        elseif version > UInt64(1) then
            vitem:append_text(" (higher than 1: the session falls back to version 1)")
        end
    end
    if bproblem then
        problem = problem or ("PROTOCOL_ERROR: " .. varint_problems[bproblem])
    end
    local summary = "Preface"
    if version ~= nil then summary = "Preface v" .. tostring(version) end
    if blen ~= nil then
        item:add(f.settings_length, tvb(pos + vsize, bsize), blen)
        if blen > UInt64(MAX_SETTINGS_BLOCK) then
            problem = problem or string.format(
                "SETTINGS_ERROR: settings block of %s bytes exceeds %d", tostring(blen), MAX_SETTINGS_BLOCK)
        end
    end
    if problem == nil then
        -- spec: "Settings"
        local r = reader(tvb, pos + vsize + bsize, off + total)
        local seen = {}
        local stated = {}
        while r:rest() > 0 and r.problem == nil do
            local at = r.off
            local sitem = item:add(f.setting, tvb(at, r:rest()))
            local sid, iditem = r:varint(sitem, f.setting_id, "setting id")
            local value
            if sid ~= nil then
                value = r:varint(sitem, f.setting_value, "setting value")
            end
            if r.off > at then sitem:set_len(r.off - at) end
            if value ~= nil then
                local key = tostring(sid)
                local known = sid <= UInt64(LAST_SETTING) and settings[sid:tonumber()] or nil
                local name = known and known.name or "unknown 0x" .. hex(sid) .. " (ignored)"
                sitem:set_text(string.format("Setting %s = %s", name, tostring(value)))
                iditem:append_text(" (" .. name .. ")")
                if seen[key] then
                    r:fail("SETTINGS_ERROR", "setting " .. name .. " repeated")
                end
                seen[key] = true
                if known then
                    if value < UInt64(known.low) or value > known.high then
                        r:fail("SETTINGS_ERROR", string.format("%s = %s outside [%d, %s]",
                            known.name, tostring(value), known.low, tostring(known.high)))
                    else
                        stated[known.name] = value
                        summary = summary .. " " .. known.name .. "=" .. tostring(value)
                    end
                end
            end
        end
        problem = r.problem
        if problem == nil and stated.MAX_FRAME_SIZE ~= nil then
            ds.max_frame = stated.MAX_FRAME_SIZE:tonumber()
        end
        if problem == nil and not pinfo.visited then
            -- a setting not stated has its initial value, 0
            ds.hints = stated.PRIORITY_HINTS and stated.PRIORITY_HINTS:tonumber() or 0
            ds.hints_stated = stated.PRIORITY_HINTS ~= nil
        end
    end
    if not pinfo.visited then ds.preface_frame = pinfo.number end
    if problem ~= nil then
        item:add_proto_expert_info(ef.malformed, problem)
        summary = summary .. " [malformed: " .. problem .. "]"
    end
    info[#info + 1] = summary
    if unframed then
        -- no usable settings length: where the frames start is unknown
        if not pinfo.visited then ds.broken = pinfo.number end
        if off + total < len then
            tree:add(memux, tvb(off + total, len - off - total), "memux (not decoded)")
                :add(f.undecoded, tvb(off + total, len - off - total))
        end
        return len - off
    end
    return total
end

-- ------------------------------------------------------------ frames

local DATA, OPEN, CREDIT, RESET, PING, GOAWAY, CHANNELS, DROP = 0, 1, 2, 3, 4, 5, 6, 7

-- which channel ids a type takes: "nonzero", "zero" or nil (any)
local channel_rule = {
    [DATA] = "nonzero", [OPEN] = "nonzero", [CREDIT] = nil, [RESET] = "nonzero",
    [PING] = "zero", [GOAWAY] = "zero", [CHANNELS] = "zero", [DROP] = "nonzero",
}
local defined_flags = { [DATA] = 0x7, [OPEN] = 0x7, [PING] = 0x1 }

local function flag_names(ftype, flags)
    local names = {}
    local function has(bit) return flags % (2 * bit) >= bit end
    if ftype == DATA then
        if has(4) then names[#names + 1] = "OPEN" end
        if has(1) then names[#names + 1] = "END" end
        if has(2) then names[#names + 1] = "FIN" end
    elseif ftype == OPEN then
        if has(1) then names[#names + 1] = "METADATA" end
        if has(2) then names[#names + 1] = "DESTINATION" end
        if has(4) then names[#names + 1] = "LOSSY" end
    elseif ftype == PING then
        if has(1) then names[#names + 1] = "ACK" end
    end
    if #names == 0 then return "" end
    return " [" .. table.concat(names, " ") .. "]"
end

-- An opening frame (OPEN, or DATA with OPEN) for channel ch from the side
-- `from`: check parity and increasing ids (spec: "Receiving an opening
-- frame") on the first pass, and remember the channel.
local function opening(pinfo, conv, ds, from, ch, service, lossy)
    local id = ch:tonumber()
    local parity = id % 2
    local problem
    if not pinfo.visited then
        if conv.client == nil then
            -- no SYN in the capture: learn the roles from the first opener
            if parity == 1 then conv.client = from else conv.client = "(not " .. from .. ")" end
        end
        local isClient = conv.client == from
        if (parity == 1) ~= isClient then
            problem = string.format("PROTOCOL_ERROR: the %s opened channel %d, of the %s's parity",
                isClient and "client" or "server", id, isClient and "server" or "client")
        elseif id <= ds.highest[parity] then
            problem = string.format("PROTOCOL_ERROR: channel %d opened after channel %d",
                id, ds.highest[parity])
        else
            ds.highest[parity] = id
            if conv.channels[id] == nil then
                conv.channels[id] = { service = service, frame = pinfo.number, lossy = lossy }
            end
        end
        if problem then
            conv.problems = conv.problems or {}
            conv.problems[pinfo.number .. ":" .. id] = problem
        end
    elseif conv.problems then
        problem = conv.problems[pinfo.number .. ":" .. id]
    end
    return problem
end

local function follow(item, tvb, off, size, conv, ch)
    local id = ch:tonumber()
    if id == 0 then return end
    local c = conv.channels[id]
    local opener = (id % 2 == 1) and "client" or "server"
    local g = item:add(f.opener, tvb(off, size), opener)
    g:set_generated()
    if c ~= nil then
        g = item:add(f.service_of, tvb(off, size), c.service)
        g:set_generated()
        if c.service == "" then g:append_text("(the default service)") end
        g = item:add(f.opened_in, tvb(off, size), c.frame)
        g:set_generated()
    end
end

-- spec: "Priority hints": after the extended type, exactly the urgency (0
-- to 7) and the weight (1 to 256), on a non-zero channel.  Adds the fields
-- found to tree; returns the summary text of a well-formed PRIORITY, or
-- nil and why it is not one (then receivers ignore it, as an unknown
-- extension frame: never an error, so that the layout may be extended).
local function dissect_priority(tvb, tree, at, pend, ch)
    local values = {}
    for _, what in ipairs({ { f.priority_urgency, "urgency" }, { f.priority_weight, "weight" } }) do
        local value, size, problem = varint(tvb, at, pend)
        if problem == "short" then
            return nil, what[2] .. " missing"
        elseif value == nil then
            return nil, what[2] .. ": " .. varint_problems[problem]
        end
        tree:add(what[1], tvb(at, size), value)
        if problem then return nil, what[2] .. ": " .. varint_problems[problem] end
        values[#values + 1] = value
        at = at + size
    end
    local urgency, weight = values[1], values[2]
    if at < pend then
        return nil, (pend - at) .. " trailing bytes"
    elseif urgency > UInt64(MAX_URGENCY) then
        return nil, "urgency " .. tostring(urgency) .. " > " .. MAX_URGENCY
    elseif weight < UInt64(1) or weight > UInt64(MAX_WEIGHT) then
        return nil, "weight " .. tostring(weight) .. " outside [1, " .. MAX_WEIGHT .. "]"
    elseif ch == UInt64(0) then
        return nil, "channel 0"
    end
    return " urgency=" .. tostring(urgency) .. " weight=" .. tostring(weight)
end

-- spec: "Priority hints": "A side MUST NOT send PRIORITY unless the
-- peer's preface announced PRIORITY_HINTS = 1; so it sends none before it
-- has read the peer's preface."  Why the well-formed PRIORITY at off, sent
-- by the side of ds to the side of peer, breaks that rule (the expert info
-- text and a short form for the Info column), or nil.  Decided on the
-- first pass from what the capture showed of the peer by then (a peer
-- preface seen only later was not read when the frame was sent, wherever
-- the capture was taken), and repeated on later passes.
local function unannounced_priority(pinfo, ds, peer, off)
    local here = pinfo.number .. ":" .. off
    if pinfo.visited then
        local seen = ds.unannounced and ds.unannounced[here]
        if seen then return seen[1], seen[2] end
        return nil
    end
    local why, short
    if peer.hints == 0 then
        why = string.format("PRIORITY sent to a peer that did not announce PRIORITY_HINTS = 1"
            .. " (its preface, in frame %d, %s): the peer ignores it", peer.preface_frame,
            peer.hints_stated and "states PRIORITY_HINTS = 0" or "does not state PRIORITY_HINTS")
        short = "peer did not announce PRIORITY_HINTS"
    elseif peer.hints == nil and not peer.prefaced and ds.preface_frame ~= nil then
        -- This side's preface is in the capture, so the capture holds the
        -- session's start (but for one started in the instant between the
        -- two prefaces), and the peer's preface has not yet passed the
        -- capture point, so had not reached this side.  (A peer seen
        -- mid-session, or whose preface is malformed, is not judged: what
        -- it announced is unknown.)
        why = "PRIORITY sent before the peer's preface: the sender cannot"
            .. " have read PRIORITY_HINTS = 1 from it"
        short = "before the peer's preface"
    end
    if why then
        ds.unannounced = ds.unannounced or {}
        ds.unannounced[here] = { why, short }
    end
    return why, short
end

-- spec: "Frame layout" and "Frame definitions".  Returns the bytes used, or
-- a negative number when more are needed.
local function dissect_frame(tvb, pinfo, tree, off, conv, ds, from, peer, info)
    local max_frame = peer.max_frame
    local len = tvb:len()
    if off + 1 >= len then return -1 end
    local type_byte = tvb(off, 1):uint()
    local ftype = math.floor(type_byte / 16)
    local flags = type_byte % 16
    local ch, csize, cproblem = varint(tvb, off + 1, len)
    if cproblem == "short" then return -1 end
    local flen, lsize, lproblem
    if ch ~= nil then
        flen, lsize, lproblem = varint(tvb, off + 1 + csize, len)
        if lproblem == "short" then return -1 end
    end
    local header_problem
    if cproblem then
        header_problem = "PROTOCOL_ERROR: channel " .. varint_problems[cproblem]
    elseif lproblem then
        header_problem = "PROTOCOL_ERROR: length " .. varint_problems[lproblem]
    elseif flen > UInt64(max_frame) then
        header_problem = string.format("FRAME_SIZE_ERROR: frame of %s bytes exceeds the maximum of %d",
            tostring(flen), max_frame)
    end
    local hsize = 1 + csize + (lsize or 0)
    local total = hsize
    if header_problem == nil then
        total = hsize + flen:tonumber()
        if off + total > len then
            return -(off + total - len)
        end
    end

    local name = frame_types[ftype]
    local item = tree:add(memux, tvb(off, total), "memux " .. name .. " frame")
    local titem = item:add(f.type_byte, tvb(off, 1))
    titem:add(f.type, tvb(off, 1))
    local fitem = titem:add(f.flags, tvb(off, 1))
    if ftype == DATA then
        fitem:add(f.flag_end, tvb(off, 1))
        fitem:add(f.flag_fin, tvb(off, 1))
        fitem:add(f.flag_open, tvb(off, 1))
    elseif ftype == OPEN then
        fitem:add(f.flag_metadata, tvb(off, 1))
        fitem:add(f.flag_destination, tvb(off, 1))
        fitem:add(f.flag_lossy, tvb(off, 1))
    elseif ftype == PING then
        fitem:add(f.flag_ack, tvb(off, 1))
    end
    local summary = name
    if ch ~= nil then
        item:add(f.channel, tvb(off + 1, csize), ch)
        summary = summary .. " ch=" .. tostring(ch)
    end
    if flen ~= nil then
        item:add(f.length, tvb(off + 1 + csize, lsize), flen)
    end
    summary = summary .. flag_names(ftype, flags)
    if header_problem ~= nil then
        -- The receiver ends the session here, and nobody can tell where a
        -- next frame would start: the rest of this direction is not decoded.
        item:add_proto_expert_info(ef.malformed, header_problem)
        info[#info + 1] = summary .. " [malformed: " .. header_problem .. "]"
        if not pinfo.visited then ds.broken = pinfo.number end
        if off + total < len then
            tree:add(memux, tvb(off + total, len - off - total), "memux (not decoded)")
                :add(f.undecoded, tvb(off + total, len - off - total))
        end
        return len - off
    end
    local pstart, plen = off + hsize, flen:tonumber()
    local pend = pstart + plen

    if ftype >= 8 then
        -- spec: "Reserved and extension frames": skipped whole by version 1
        -- receivers; the channel id and flags are not examined.
        local ignored = nil
        if ftype == 0xF and plen > 0 then
            local ext, esize, eproblem = varint(tvb, pstart, pend)
            if ext ~= nil and eproblem == nil then
                local eitem = item:add(f.extended_type, tvb(pstart, esize), ext)
                eitem:append_text(" (0x" .. hex(ext) .. ")")
                if ext == UInt64(EXT_PRIORITY) then
                    eitem:append_text(" (PRIORITY)")
                    local hint, why = dissect_priority(tvb, item, pstart + esize, pend, ch)
                    if hint ~= nil then
                        -- a receiver that announced PRIORITY_HINTS = 1 acts on it
                        item:set_text("memux PRIORITY frame")
                        summary = "PRIORITY ch=" .. tostring(ch) .. hint
                        if flags ~= 0 then
                            fitem:add(f.flag_reserved, tvb(off, 1), flags)
                                :add_proto_expert_info(ef.reserved_flags)
                        end
                        follow(item, tvb, off + 1, csize, conv, ch)
                        ignored = false
                        local why, short = unannounced_priority(pinfo, ds, peer, off)
                        if why then
                            item:add_proto_expert_info(ef.unannounced, why)
                            summary = summary .. " [" .. short .. "]"
                        end
                    else
                        ignored = "PRIORITY not in its layout (" .. why
                            .. "): ignored as an unknown extension frame"
                        summary = summary .. " type=0x" .. hex(ext) .. " (PRIORITY, ignored: " .. why .. ")"
                    end
                else
                    summary = summary .. " type=0x" .. hex(ext)
                end
            end
        end
        if ignored == nil then
            item:add_proto_expert_info(ef.ignored)
        elseif ignored then
            item:add_proto_expert_info(ef.ignored, ignored)
        end
        if plen > 0 then item:add(f.payload, tvb(pstart, plen)) end
        if ignored ~= false then summary = summary .. " len=" .. plen end
        info[#info + 1] = summary
        return total
    end

    local defined = defined_flags[ftype] or 0
    local undefined = 0
    for _, bit in ipairs({ 1, 2, 4, 8 }) do
        if flags % (2 * bit) >= bit and defined % (2 * bit) < bit then undefined = undefined + bit end
    end
    if undefined ~= 0 then
        local ritem = fitem:add(f.flag_reserved, tvb(off, 1), undefined)
        ritem:add_proto_expert_info(ef.reserved_flags)
    end

    local problem
    local rule = channel_rule[ftype]
    if rule == "nonzero" and ch == UInt64(0) then
        problem = "PROTOCOL_ERROR: " .. name .. " frame on channel 0"
    elseif rule == "zero" and ch ~= UInt64(0) then
        problem = "PROTOCOL_ERROR: " .. name .. " frame on channel " .. tostring(ch)
    end

    local r = reader(tvb, pstart, pend)
    local violation
    if problem ~= nil then
        -- the channel is checked before the payload: show it raw
        if plen > 0 then item:add(f.payload, tvb(pstart, plen)) end
    elseif ftype == DATA then
        if plen > 0 then item:add(f.data, tvb(pstart, plen)) end
        summary = summary .. " len=" .. plen
        if flags % 8 >= 4 then
            violation = opening(pinfo, conv, ds, from, ch, "", false)
        end
    elseif ftype == OPEN then
        local at, n = r:bytes(item, f.service_length, "service name", MAX_NAME_LENGTH)
        local service = ""
        if at ~= nil then
            service = n > 0 and display(tvb(at, n):raw()) or ""
            add(item, f.service, tvb, at, n, service)
            summary = summary .. " service=" .. (n > 0 and printable(service, 40) or "(default)")
        end
        if flags % 2 == 1 and r.problem == nil then
            local mat, mn = r:bytes(item, f.metadata_length, "metadata", nil)
            if mat ~= nil then
                if mn > 0 then item:add(f.metadata, tvb(mat, mn)) else item:add(f.metadata, "") end
            end
        end
        if flags % 4 >= 2 and r.problem == nil then
            local hat, hn = r:bytes(item, f.host_length, "destination host", MAX_NAME_LENGTH)
            if hat ~= nil then
                local host = r:text(item, f.host, "destination host", hat, hn)
                local portv, pitem = r:varint(item, f.port, "destination port")
                if portv ~= nil then
                    if portv > UInt64(65535) then
                        r:fail("PROTOCOL_ERROR", "destination port " .. tostring(portv) .. " > 65535")
                    end
                    summary = summary .. " destination=" .. printable(host, 60) .. ":" .. tostring(portv)
                end
            end
        end
        if r.problem == nil and r:rest() > 0 then
            r:fail("PROTOCOL_ERROR", "OPEN frame has trailing bytes")
        end
        problem = r.problem
        if problem == nil then
            violation = opening(pinfo, conv, ds, from, ch, service, flags % 8 >= 4)
        end
    elseif ftype == CREDIT or ftype == CHANNELS or ftype == DROP then
        local field = ({ [CREDIT] = f.credit_limit, [CHANNELS] = f.channels_limit, [DROP] = f.drop_count })[ftype]
        local what = ({ [CREDIT] = "limit", [CHANNELS] = "limit", [DROP] = "count" })[ftype]
        local value = r:varint(item, field, name .. " value")
        if value ~= nil then
            summary = summary .. " " .. what .. "=" .. tostring(value)
            if r:rest() > 0 then
                r:fail("PROTOCOL_ERROR", name .. " frame has trailing bytes")
            elseif ftype == DROP and value == UInt64(0) then
                r:fail("PROTOCOL_ERROR", "DROP of zero messages")
            end
        end
        problem = r.problem
    elseif ftype == RESET or ftype == GOAWAY then
        local last
        if ftype == GOAWAY then
            last = r:varint(item, f.goaway_last, "GOAWAY last channel")
        end
        local code, citem
        if r.problem == nil then
            code, citem = r:varint(item, ftype == RESET and f.reset_code or f.goaway_code, name .. " code")
        end
        if code ~= nil then
            local cname = code_name(code)
            citem:append_text(" (" .. cname .. ")")
            local reason = r:text(item, ftype == RESET and f.reset_reason or f.goaway_reason,
                name .. " reason", r.off, r:rest())
            if last ~= nil then summary = summary .. " last=" .. tostring(last) end
            summary = summary .. " " .. cname
            if #reason > 0 then summary = summary .. ' "' .. printable(reason, 60) .. '"' end
            -- NO_ERROR and CANCEL are everyday ends; anything else is worth a look
            if code ~= UInt64(0) and code ~= UInt64(7) and r.problem == nil then
                item:add_proto_expert_info(ef.error_code, name .. " " .. cname
                    .. (#reason > 0 and (": " .. reason) or ""))
            end
        end
        problem = r.problem
    elseif ftype == PING then
        if plen > MAX_PING_PAYLOAD then
            problem = string.format("FRAME_SIZE_ERROR: PING payload of %d bytes > 64", plen)
        end
        if plen > 0 then item:add(f.ping_payload, tvb(pstart, plen)) end
        summary = summary .. " len=" .. plen
    end
    if rule ~= "zero" and ch ~= UInt64(0) then
        follow(item, tvb, off + 1, csize, conv, ch)
    end
    if problem ~= nil then
        item:add_proto_expert_info(ef.malformed, problem)
        summary = summary .. " [malformed: " .. problem .. "]"
    elseif violation ~= nil then
        item:add_proto_expert_info(ef.violation, violation)
        summary = summary .. " [violation: " .. violation .. "]"
    end
    info[#info + 1] = summary
    return total
end

-- ------------------------------------------------------------ PROXY headers

local PROXY_V2 = "\r\n\r\n\0\r\nQUIT\n"

-- The length of a PROXY protocol header at off (HAProxy's send-proxy or
-- send-proxy-v2), 0 if there is none, or a negative number if more bytes
-- are needed to tell.
local function proxy_header_length(tvb, off)
    local avail = tvb:len() - off
    local head = tvb(off, math.min(avail, 16)):raw()
    if head:sub(1, math.min(#head, 12)) == PROXY_V2:sub(1, math.min(#head, 12)) then
        if avail < 16 then return -1 end
        local total = 16 + tvb(off + 14, 2):uint()
        if avail < total then return -(total - avail) end
        return total
    end
    if head:sub(1, math.min(#head, 6)) == ("PROXY "):sub(1, math.min(#head, 6)) then
        local text = tvb(off, math.min(avail, 108)):raw()
        local e = text:find("\r\n", 1, true)
        if e then return e + 1 end
        if avail < 108 then return -1 end
    end
    return 0
end

-- Show a PROXY header's addresses: the client's, as the balancer saw it
-- (Wireshark's own PROXY dissector is a heuristic only, which a port
-- registration bypasses).
local function dissect_proxy(tvb, tree, off, used, info)
    local item = tree:add(memux, tvb(off, used), "PROXY protocol header")
    local src, dst
    if tvb(off, 1):uint() == 0x0D then
        local family = tvb(off + 13, 1):uint()
        local body = off + 16
        if family == 0x11 and used >= 28 then
            src = tostring(tvb(body, 4):ipv4()) .. ":" .. tvb(body + 8, 2):uint()
            dst = tostring(tvb(body + 4, 4):ipv4()) .. ":" .. tvb(body + 10, 2):uint()
        elseif family == 0x21 and used >= 52 then
            src = "[" .. tostring(tvb(body, 16):ipv6()) .. "]:" .. tvb(body + 32, 2):uint()
            dst = "[" .. tostring(tvb(body + 16, 16):ipv6()) .. "]:" .. tvb(body + 34, 2):uint()
        end
        item:append_text(" (version 2)")
    else
        local words = {}
        for w in tvb(off, used - 2):raw():gmatch("%S+") do words[#words + 1] = w end
        if #words == 6 then
            local v6 = words[2] == "TCP6"
            src = (v6 and "[" .. words[3] .. "]" or words[3]) .. ":" .. words[5]
            dst = (v6 and "[" .. words[4] .. "]" or words[4]) .. ":" .. words[6]
        end
        item:append_text(" (version 1)")
    end
    if src then
        item:add(f.proxy_source, tvb(off, used), src)
        item:add(f.proxy_destination, tvb(off, used), dst)
        info[#info + 1] = "PROXY from " .. src
    else
        info[#info + 1] = "PROXY header"
    end
end

-- ------------------------------------------------------------ TLS

-- memux over TLS on memux's port: the connection's bytes go to Wireshark's
-- TLS dissector, which (given the keys) hands the decrypted bytes back here
-- through ALPN memux/1.
local ok_tls, tls_dissector = pcall(Dissector.get, "tls")
if not ok_tls then tls_dissector = nil end
local tls_depth = 0 -- > 0 while the TLS dissector runs under this one

local function starts_tls(tvb, off)
    return tls_dissector ~= nil and tvb:len() - off >= 3
        and tvb(off, 1):uint() == 0x16 and tvb(off + 1, 1):uint() == 0x03
end

-- Hand the bytes from off on to TLS.
local function hand_to_tls(tvb, pinfo, tree, off)
    -- TCP lets the dissector it calls ask for more bytes (can_desegment),
    -- and each call one level down counts it down: let TLS ask as this
    -- dissector could.
    if pinfo.can_desegment > 0 then pinfo.can_desegment = pinfo.can_desegment + 1 end
    local rest = off > 0 and tvb(off):tvb() or tvb
    tls_depth = tls_depth + 1
    local ok, result = pcall(function() return tls_dissector:call(rest, pinfo, tree) end)
    tls_depth = tls_depth - 1
    if not ok then error(result) end
    if pinfo.desegment_len > 0 then
        -- TLS counted from off; TCP counts from the start
        pinfo.desegment_offset = pinfo.desegment_offset + off
    end
    return off + result
end

-- ------------------------------------------------------------ the dissector

function memux.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len == 0 then return 0 end
    local inside = tls_depth > 0
    local conv = conversation_of(pinfo, inside)
    local from = endpoint_key(pinfo.src, pinfo.src_port)
    local ds = direction(conv, from)
    if ds.tls and pinfo.number > ds.tls then
        -- this direction is TLS since an earlier packet
        return hand_to_tls(tvb, pinfo, tree, 0)
    end
    pinfo.cols.protocol = "memux"
    local peer = direction(conv, endpoint_key(pinfo.dst, pinfo.dst_port))
    local info = {}
    local off = 0
    while off < len do
        local used
        if ds.broken and pinfo.number > ds.broken then
            -- after a header error nobody can find the next frame
            local item = tree:add(memux, tvb(off, len - off), "memux (not decoded)")
            item:add(f.undecoded, tvb(off, len - off))
            info[#info + 1] = "not decoded after a session error"
            used = len - off
        else
            local here = pinfo.number .. ":" .. off
            local kind
            if pinfo.visited then
                -- do as the first pass did here (TCP calls again with the
                -- segments whose bytes it reassembles, expecting the same
                -- requests for more)
                local seen = ds.at[here]
                if type(seen) == "number" then used = seen else kind = seen or "frame" end
            elseif not ds.prefaced then
                local proxy = proxy_header_length(tvb, off)
                if proxy ~= 0 and not ds.proxied then
                    kind = "proxy"
                elseif not inside and starts_tls(tvb, off) then
                    -- a direction that starts (after any PROXY header)
                    -- with a TLS handshake record is TLS: memux over TLS.
                    -- (A TLS client that reached a memux port without TLS
                    -- shows so too; the server's GOAWAY says the rest.)
                    kind = "tls"
                    ds.prefaced = true
                    ds.tls = pinfo.number
                else
                    local n = math.min(len - off, #MAGIC)
                    if tvb(off, n):raw() == MAGIC:sub(1, n) then
                        kind = "preface"
                    elseif conv.syn then
                        -- the capture has the connection's start: these
                        -- are its first bytes, and they are not memux
                        kind = "foreign"
                    else
                        kind = "nopreface"
                    end
                end
            else
                kind = "frame"
            end
            if used ~= nil then
                -- a request for more bytes, repeated
            elseif kind == "tls" then
                hand_to_tls(tvb, pinfo, tree, off)
                if not pinfo.visited then ds.at[here] = kind end
                break
            elseif kind == "proxy" then
                used = proxy_header_length(tvb, off)
                if used > 0 then
                    dissect_proxy(tvb, tree, off, used, info)
                    if not pinfo.visited then ds.proxied = true end
                end
            elseif kind == "foreign" then
                local problem = "PROTOCOL_ERROR: not a memux peer: the stream starts with "
                    .. describe_foreign(tvb(off, math.min(len - off, 16)):raw())
                local item = tree:add(memux, tvb(off, len - off), "memux (not a memux stream)")
                item:add(f.undecoded, tvb(off, len - off))
                item:add_proto_expert_info(ef.malformed, problem)
                info[#info + 1] = "[malformed: " .. problem .. "]"
                if not pinfo.visited then
                    ds.prefaced = true
                    ds.broken = pinfo.number
                end
                used = len - off
            elseif kind == "preface" then
                used = dissect_preface(tvb, pinfo, tree, off, ds, info)
                if used > 0 and not pinfo.visited then ds.prefaced = true end
            else
                if kind == "nopreface" then
                    if not pinfo.visited then ds.prefaced = true end
                    local item = tree:add(memux, tvb(off, 0), "memux (no preface)")
                    item:add_proto_expert_info(ef.no_preface,
                        "No memux preface at the start of this direction: capture started mid-session?")
                end
                used = dissect_frame(tvb, pinfo, tree, off, conv, ds, from, peer, info)
            end
            if not pinfo.visited then
                ds.at[here] = used < 0 and used or kind
            end
        end
        if used < 0 then
            pinfo.desegment_offset = off
            if used == -1 then
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            else
                pinfo.desegment_len = -used
            end
            break
        end
        off = off + used
    end
    if #info > 0 then
        pinfo.cols.info:set(table.concat(info, ", "))
    end
    return len
end

-- ------------------------------------------------------------ registration

local tcp_port_table = DissectorTable.get("tcp.port")
local registered_port = 0

local function register_port()
    if registered_port ~= 0 then
        tcp_port_table:remove(registered_port, memux)
    end
    registered_port = memux.prefs.tcp_port
    if registered_port ~= 0 then
        tcp_port_table:add(registered_port, memux)
    end
end

function memux.prefs_changed()
    if memux.prefs.tcp_port ~= registered_port then
        register_port()
    end
end

register_port()

-- The heuristic: a direction that starts with the magic (possibly after a
-- PROXY header) is memux; the whole TCP conversation then is.
local function heuristic(tvb, pinfo, tree)
    if not memux.prefs.heuristic then return false end
    local off = 0
    local proxy = proxy_header_length(tvb, 0)
    if proxy > 0 then off = proxy elseif proxy < 0 then return false end
    if tvb:len() < off + #MAGIC or tvb(off, #MAGIC):raw() ~= MAGIC then
        return false
    end
    pinfo.conversation = memux
    memux.dissector(tvb, pinfo, tree)
    return true
end

memux:register_heuristic("tcp", heuristic)

-- memux over TLS (ALPN memux/1), when Wireshark has the keys to decrypt it.
local ok_alpn, alpn = pcall(DissectorTable.get, "tls.alpn")
if ok_alpn and alpn then alpn:add("memux/1", memux) end
