#include "pg/pgoutput.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

namespace hi::pg {

namespace {

// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
constexpr std::int64_t kPgEpochUnixUs = 946'684'800LL * 1'000'000LL;

// Bounds-checked big-endian reader over one payload. A failed read does not advance, so offset()
// is then the start of the field that did not fit: the offset the error reports. Error text is
// built only on failure, keeping the success path free of string work.
class Reader {
 public:
  Reader(std::span<const std::uint8_t> data, std::string_view kind)
      : data_(data), kind_(kind), pos_(1) {}  // byte 0 is the message type, already dispatched on

  std::size_t offset() const { return pos_; }
  std::size_t remaining() const { return data_.size() - pos_; }

  bool u8(std::uint8_t& out) {
    if (remaining() < 1) return false;
    out = data_[pos_++];
    return true;
  }
  bool u16(std::uint16_t& out) { return big_endian(out); }
  bool u32(std::uint32_t& out) { return big_endian(out); }
  bool u64(std::uint64_t& out) { return big_endian(out); }
  bool i16(std::int16_t& out) { return as_signed<std::uint16_t>(out); }
  bool i32(std::int32_t& out) { return as_signed<std::uint32_t>(out); }
  bool i64(std::int64_t& out) { return as_signed<std::uint64_t>(out); }
  bool lsn(Lsn& out) { return u64(out.value); }

  // A NUL-terminated string; the terminator is consumed, not copied.
  bool cstring(std::string& out) {
    const auto* begin = data_.data() + pos_;
    const void* nul = std::memchr(begin, 0, remaining());
    if (nul == nullptr) return false;
    auto len = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - begin);
    out.assign(reinterpret_cast<const char*>(begin), len);
    pos_ += len + 1;
    return true;
  }

  // Exactly n bytes.
  bool bytes(std::size_t n, std::string& out) {
    if (remaining() < n) return false;
    out.assign(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return true;
  }

  // "pgoutput insert: truncated relation id at offset 1" (kDataLoss).
  Error truncated(std::string_view field) const { return data_loss(describe("truncated ", field)); }
  // "pgoutput update: unknown tuple marker 'X' (0x58) at offset 5" (kInvalidArgument).
  Error invalid(std::string_view what) const { return invalid_argument(describe("", what)); }

  // Rejects bytes after the last field: they mean the payload was misread or is not pgoutput v1/2.
  Status finish() const {
    if (remaining() == 0) return ok_status();
    return invalid(std::to_string(remaining()) + " trailing bytes");
  }

 private:
  template <typename U>
  bool big_endian(U& out) {
    if (remaining() < sizeof(U)) return false;
    U v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>((v << 8) | data_[pos_ + i]);
    pos_ += sizeof(U);
    out = v;
    return true;
  }
  template <typename U, typename S>
  bool as_signed(S& out) {
    U u = 0;
    if (!big_endian(u)) return false;
    out = static_cast<S>(u);  // two's complement, well-defined since C++20
    return true;
  }

  std::string describe(std::string_view prefix, std::string_view what) const {
    std::string m = "pgoutput ";
    m += kind_;
    m += ": ";
    m += prefix;
    m += what;
    m += " at offset ";
    m += std::to_string(pos_);
    return m;
  }

  std::span<const std::uint8_t> data_;
  std::string_view kind_;
  std::size_t pos_;
};

// "'X' (0x58)" for a byte in an error message; non-printable bytes only in hex.
std::string describe_byte(std::uint8_t b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  if (b >= 0x20 && b < 0x7f) {
    s += '\'';
    s += static_cast<char>(b);
    s += "' ";
  }
  s += "(0x";
  s += kHex[b >> 4];
  s += kHex[b & 0xf];
  s += ')';
  return s;
}

std::string column_field(std::string_view tuple, std::size_t index, std::string_view what) {
  std::string f(tuple);
  if (!f.empty()) f += ' ';
  f += "column ";
  f += std::to_string(index);
  f += ' ';
  f += what;
  return f;
}

// TupleData: Int16 column count, then per column a kind byte and, for 't'/'b', Int32 length +
// bytes.
Status read_tuple(Reader& r, std::string_view tuple, Tuple& out) {
  std::int16_t count = 0;
  if (!r.i16(count)) return r.truncated(std::string(tuple) + " column count");
  if (count < 0) return r.invalid(std::string(tuple) + " column count " + std::to_string(count));
  // Each column takes at least one byte: never reserve more than the payload could hold.
  out.columns.reserve(std::min<std::size_t>(static_cast<std::size_t>(count), r.remaining()));
  for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
    std::uint8_t kind = 0;
    if (!r.u8(kind)) return r.truncated(column_field(tuple, i, "kind"));
    Column& col = out.columns.emplace_back();
    switch (kind) {
      case 'n':
        col.kind = Column::Kind::kNull;
        continue;
      case 'u':
        col.kind = Column::Kind::kUnchangedToast;
        continue;
      case 't':
        col.kind = Column::Kind::kText;
        break;
      case 'b':
        col.kind = Column::Kind::kBinary;
        break;
      default:
        out.columns.pop_back();
        return r.invalid(column_field(tuple, i, "has unknown kind " + describe_byte(kind)));
    }
    std::int32_t len = 0;
    if (!r.i32(len)) return r.truncated(column_field(tuple, i, "length"));
    if (len < 0) {
      return r.invalid(column_field(tuple, i, "has negative length " + std::to_string(len)));
    }
    if (!r.bytes(static_cast<std::size_t>(len), col.data)) {
      return r.truncated(column_field(tuple, i, "data"));
    }
  }
  return ok_status();
}

// The xid that precedes a data message's fields inside a stream (protocol 2).
bool read_stream_xid(Reader& r, bool in_stream, std::optional<std::uint32_t>& xid) {
  if (!in_stream) return true;
  std::uint32_t v = 0;
  if (!r.u32(v)) return false;
  xid = v;
  return true;
}

// Each decode_* reads the fields after the type byte into a Message built in place, so the tuples
// and strings are written once, straight from the payload.

Result<Message> decode_begin(Reader& r) {
  Message out(std::in_place_type<Begin>);
  auto& m = std::get<Begin>(out);
  if (!r.lsn(m.final_lsn)) return r.truncated("final lsn");
  if (!r.i64(m.commit_time_us)) return r.truncated("commit time");
  if (!r.u32(m.xid)) return r.truncated("xid");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_commit(Reader& r) {
  Message out(std::in_place_type<Commit>);
  auto& m = std::get<Commit>(out);
  if (!r.u8(m.flags)) return r.truncated("flags");
  if (!r.lsn(m.commit_lsn)) return r.truncated("commit lsn");
  if (!r.lsn(m.end_lsn)) return r.truncated("end lsn");
  if (!r.i64(m.commit_time_us)) return r.truncated("commit time");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_origin(Reader& r) {
  Message out(std::in_place_type<Origin>);
  auto& m = std::get<Origin>(out);
  if (!r.lsn(m.commit_lsn)) return r.truncated("commit lsn");
  if (!r.cstring(m.name)) return r.truncated("name");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_relation(Reader& r, bool in_stream) {
  Message out(std::in_place_type<Relation>);
  auto& m = std::get<Relation>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  if (!r.u32(m.id)) return r.truncated("relation id");
  if (!r.cstring(m.schema)) return r.truncated("schema");
  if (!r.cstring(m.name)) return r.truncated("name");
  std::uint8_t identity = 0;
  if (!r.u8(identity)) return r.truncated("replica identity");
  m.replica_identity = static_cast<char>(identity);
  std::int16_t count = 0;
  if (!r.i16(count)) return r.truncated("column count");
  if (count < 0) return r.invalid("negative column count " + std::to_string(count));
  // A column takes at least 10 bytes (flags, empty name, oid, typmod).
  m.columns.reserve(std::min<std::size_t>(static_cast<std::size_t>(count), r.remaining() / 10));
  for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
    RelationColumn& col = m.columns.emplace_back();
    std::uint8_t flags = 0;
    if (!r.u8(flags)) return r.truncated(column_field("", i, "flags"));
    col.key = (flags & 1) != 0;
    if (!r.cstring(col.name)) return r.truncated(column_field("", i, "name"));
    if (!r.u32(col.type_oid)) return r.truncated(column_field("", i, "type oid"));
    if (!r.i32(col.type_modifier)) return r.truncated(column_field("", i, "type modifier"));
  }
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_type(Reader& r, bool in_stream) {
  Message out(std::in_place_type<Type>);
  auto& m = std::get<Type>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  if (!r.u32(m.id)) return r.truncated("type id");
  if (!r.cstring(m.schema)) return r.truncated("schema");
  if (!r.cstring(m.name)) return r.truncated("name");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_insert(Reader& r, bool in_stream) {
  Message out(std::in_place_type<Insert>);
  auto& m = std::get<Insert>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  if (!r.u32(m.relation_id)) return r.truncated("relation id");
  std::uint8_t marker = 0;
  if (!r.u8(marker)) return r.truncated("tuple marker");
  if (marker != 'N') return r.invalid("expected tuple marker 'N', got " + describe_byte(marker));
  if (auto s = read_tuple(r, "new tuple", m.new_tuple); !s) return s.error();
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_update(Reader& r, bool in_stream) {
  Message out(std::in_place_type<Update>);
  auto& m = std::get<Update>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  if (!r.u32(m.relation_id)) return r.truncated("relation id");
  std::uint8_t marker = 0;
  if (!r.u8(marker)) return r.truncated("tuple marker");
  if (marker == 'K' || marker == 'O') {
    m.old_kind = static_cast<OldTupleKind>(marker);
    if (auto s = read_tuple(r, "old tuple", m.old_tuple); !s) return s.error();
    if (!r.u8(marker)) return r.truncated("new tuple marker");
  }
  if (marker != 'N') {
    return r.invalid("expected tuple marker 'K', 'O' or 'N', got " + describe_byte(marker));
  }
  if (auto s = read_tuple(r, "new tuple", m.new_tuple); !s) return s.error();
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_delete(Reader& r, bool in_stream) {
  Message out(std::in_place_type<Delete>);
  auto& m = std::get<Delete>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  if (!r.u32(m.relation_id)) return r.truncated("relation id");
  std::uint8_t marker = 0;
  if (!r.u8(marker)) return r.truncated("tuple marker");
  if (marker != 'K' && marker != 'O') {
    return r.invalid("expected tuple marker 'K' or 'O', got " + describe_byte(marker));
  }
  m.old_kind = static_cast<OldTupleKind>(marker);
  if (auto s = read_tuple(r, "old tuple", m.old_tuple); !s) return s.error();
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_truncate(Reader& r, bool in_stream) {
  constexpr std::uint8_t kCascade = 1 << 0;
  constexpr std::uint8_t kRestartIdentity = 1 << 1;
  Message out(std::in_place_type<Truncate>);
  auto& m = std::get<Truncate>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  std::int32_t count = 0;
  if (!r.i32(count)) return r.truncated("relation count");
  if (count < 0) return r.invalid("negative relation count " + std::to_string(count));
  std::uint8_t options = 0;
  if (!r.u8(options)) return r.truncated("options");
  m.cascade = (options & kCascade) != 0;
  m.restart_identity = (options & kRestartIdentity) != 0;
  m.relation_ids.reserve(std::min<std::size_t>(static_cast<std::size_t>(count), r.remaining() / 4));
  for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
    if (!r.u32(m.relation_ids.emplace_back())) {
      return r.truncated("relation id " + std::to_string(i));
    }
  }
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_message(Reader& r, bool in_stream) {
  constexpr std::uint8_t kTransactional = 1 << 0;
  Message out(std::in_place_type<LogicalMessage>);
  auto& m = std::get<LogicalMessage>(out);
  if (!read_stream_xid(r, in_stream, m.xid)) return r.truncated("xid");
  std::uint8_t flags = 0;
  if (!r.u8(flags)) return r.truncated("flags");
  m.transactional = (flags & kTransactional) != 0;
  if (!r.lsn(m.lsn)) return r.truncated("lsn");
  if (!r.cstring(m.prefix)) return r.truncated("prefix");
  std::int32_t len = 0;
  if (!r.i32(len)) return r.truncated("content length");
  if (len < 0) return r.invalid("negative content length " + std::to_string(len));
  if (!r.bytes(static_cast<std::size_t>(len), m.content)) return r.truncated("content");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_stream_start(Reader& r) {
  Message out(std::in_place_type<StreamStart>);
  auto& m = std::get<StreamStart>(out);
  if (!r.u32(m.xid)) return r.truncated("xid");
  std::uint8_t first = 0;
  if (!r.u8(first)) return r.truncated("first segment flag");
  m.first_segment = first != 0;
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_stream_stop(Reader& r) {
  if (auto s = r.finish(); !s) return s.error();
  return Message(std::in_place_type<StreamStop>);
}

Result<Message> decode_stream_commit(Reader& r) {
  Message out(std::in_place_type<StreamCommit>);
  auto& m = std::get<StreamCommit>(out);
  if (!r.u32(m.xid)) return r.truncated("xid");
  if (!r.u8(m.flags)) return r.truncated("flags");
  if (!r.lsn(m.commit_lsn)) return r.truncated("commit lsn");
  if (!r.lsn(m.end_lsn)) return r.truncated("end lsn");
  if (!r.i64(m.commit_time_us)) return r.truncated("commit time");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

Result<Message> decode_stream_abort(Reader& r) {
  Message out(std::in_place_type<StreamAbort>);
  auto& m = std::get<StreamAbort>(out);
  if (!r.u32(m.xid)) return r.truncated("xid");
  if (!r.u32(m.subxid)) return r.truncated("subxid");
  if (auto s = r.finish(); !s) return s.error();
  return out;
}

// Transaction-boundary messages never occur inside a stream segment, and StreamStop only inside
// one: anything else means a message was lost or the stream was misread.
Error out_of_place(std::string_view kind, std::optional<std::uint32_t> stream_xid) {
  std::string m = "pgoutput ";
  m += kind;
  if (stream_xid) {
    m += ": inside the stream segment of xid ";
    m += std::to_string(*stream_xid);
  } else {
    m += ": outside any stream segment";
  }
  m += " at offset 0";
  return invalid_argument(std::move(m));
}

}  // namespace

std::string_view message_name(const Message& message) {
  return std::visit([](const auto& m) { return std::decay_t<decltype(m)>::kName; }, message);
}

std::int64_t pg_time_to_unix_us(std::int64_t pg_time_us) {
  if (pg_time_us > std::numeric_limits<std::int64_t>::max() - kPgEpochUnixUs) {
    return std::numeric_limits<std::int64_t>::max();
  }
  return pg_time_us + kPgEpochUnixUs;
}

Result<Message> Decoder::decode(std::span<const std::uint8_t> data) {
  if (data.empty()) return data_loss("pgoutput: empty message at offset 0");
  const bool in_stream = stream_xid_.has_value();
  switch (data[0]) {
    case 'B':
      if (in_stream) return out_of_place(Begin::kName, stream_xid_);
      {
        Reader r(data, Begin::kName);
        return decode_begin(r);
      }
    case 'C':
      if (in_stream) return out_of_place(Commit::kName, stream_xid_);
      {
        Reader r(data, Commit::kName);
        return decode_commit(r);
      }
    case 'O':
      if (in_stream) return out_of_place(Origin::kName, stream_xid_);
      {
        Reader r(data, Origin::kName);
        return decode_origin(r);
      }
    case 'R': {
      Reader r(data, Relation::kName);
      return decode_relation(r, in_stream);
    }
    case 'Y': {
      Reader r(data, Type::kName);
      return decode_type(r, in_stream);
    }
    case 'I': {
      Reader r(data, Insert::kName);
      return decode_insert(r, in_stream);
    }
    case 'U': {
      Reader r(data, Update::kName);
      return decode_update(r, in_stream);
    }
    case 'D': {
      Reader r(data, Delete::kName);
      return decode_delete(r, in_stream);
    }
    case 'T': {
      Reader r(data, Truncate::kName);
      return decode_truncate(r, in_stream);
    }
    case 'M': {
      Reader r(data, LogicalMessage::kName);
      return decode_message(r, in_stream);
    }
    case 'S': {
      if (in_stream) return out_of_place(StreamStart::kName, stream_xid_);
      Reader r(data, StreamStart::kName);
      auto result = decode_stream_start(r);
      if (result) stream_xid_ = std::get<StreamStart>(*result).xid;
      return result;
    }
    case 'E': {
      if (!in_stream) return out_of_place(StreamStop::kName, stream_xid_);
      Reader r(data, StreamStop::kName);
      auto result = decode_stream_stop(r);
      if (result) stream_xid_.reset();
      return result;
    }
    case 'c':
      if (in_stream) return out_of_place(StreamCommit::kName, stream_xid_);
      {
        Reader r(data, StreamCommit::kName);
        return decode_stream_commit(r);
      }
    case 'A':
      if (in_stream) return out_of_place(StreamAbort::kName, stream_xid_);
      {
        Reader r(data, StreamAbort::kName);
        return decode_stream_abort(r);
      }
    default:
      return invalid_argument("pgoutput: unknown message type " + describe_byte(data[0]) +
                              " at offset 0");
  }
}

}  // namespace hi::pg
