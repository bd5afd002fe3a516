#include "sinks/change.h"

#include <simdjson.h>

#include <charconv>

#include "core/time.h"
#include "pg/lsn.h"

namespace hi::sinks {
namespace {

bool parse_u64(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && p == text.data() + text.size();
}

// The length of a parameterised type ("character varying(40)" -> 40), or -1 without one.
long type_length(std::string_view pg_type) {
  const auto open = pg_type.find('(');
  if (open == std::string_view::npos) return -1;
  std::uint64_t n = 0;
  const auto close = pg_type.find_first_of(",)", open);
  if (close == std::string_view::npos || !parse_u64(pg_type.substr(open + 1, close - open - 1), n))
    return -1;
  return static_cast<long>(n);
}

int integer_rank(std::string_view base) {
  if (base == "smallint") return 1;
  if (base == "integer") return 2;
  if (base == "bigint") return 3;
  if (base == "numeric") return 4;
  return 0;
}

}  // namespace

namespace {

// One past the '}' closing the JSON object that opens at text[open], or npos. Strings are skipped
// with their escapes, so braces inside them do not count.
std::size_t object_end(std::string_view text, std::size_t open) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = open; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

Result<Types> parse_types(std::string_view text) {
  auto t = nlohmann::json::parse(text, nullptr, false);
  if (t.is_discarded() || !t.is_object()) return invalid_argument("bad types");
  for (const auto& v : t) {
    if (!v.is_string()) return invalid_argument("bad types");
  }
  return std::make_shared<const nlohmann::json>(std::move(t));
}

}  // namespace

Result<Types> TypesCache::intern(const std::string& topic, std::string_view text) {
  auto it = topics_.find(topic);
  if (it != topics_.end() && it->second.text == text) return it->second.types;
  auto parsed = parse_types(text);
  if (!parsed) return parsed.error();
  Entry& e = topics_[topic];
  e.text.assign(text);
  e.types = *parsed;
  return e.types;
}

nlohmann::json Change::key() const {
  auto k = nlohmann::json::parse(key_text, nullptr, false);
  if (k.is_discarded() || !k.is_object()) return nullptr;
  return k;
}

Result<Change> parse_change_reference(const bus::Delivery& d, TypesCache* cache) {
  // The relay writes {"op":"X","types":{...},...}: the types are cut out of the text before it is
  // parsed and interned instead (a batch of one table repeats them in every change).
  constexpr std::string_view kHead = R"({"op":"?","types":{)";
  std::string_view text = d.value;
  std::string without_types;
  std::string_view types_text;
  const std::size_t types_open = kHead.size() - 1;
  if (cache != nullptr && text.size() > kHead.size() && text[types_open] == '{' &&
      text.substr(0, 7) == kHead.substr(0, 7) &&
      text.substr(8, types_open - 8) == kHead.substr(8, types_open - 8)) {
    if (const std::size_t end = object_end(text, types_open); end != std::string_view::npos) {
      types_text = text.substr(types_open, end - types_open);
      without_types.reserve(text.size() - types_text.size());
      without_types.append(text.substr(0, 9));  // {"op":"X"
      without_types.append(text.substr(end));
      text = without_types;
    }
  }
  auto v = nlohmann::json::parse(text, nullptr, false);
  if (v.is_discarded() || !v.is_object()) return invalid_argument("not a JSON object");
  Change c;
  const auto op = v.find("op");
  if (op == v.end() || !op->is_string() || op->get_ref<const std::string&>().size() != 1) {
    return invalid_argument("no op");
  }
  c.op = op->get_ref<const std::string&>()[0];
  if (c.op != 'c' && c.op != 'u' && c.op != 'd' && c.op != 't' && c.op != 'r') {
    return invalid_argument("unknown op");
  }
  const auto source = v.find("source");
  if (source == v.end() || !source->is_object()) return invalid_argument("no source");
  const auto table = source->find("table");
  const auto lsn = source->find("commit_lsn");
  const auto ordinal = source->find("ordinal");
  if (table == source->end() || !table->is_string() || lsn == source->end() || !lsn->is_string() ||
      ordinal == source->end() || !ordinal->is_number_unsigned()) {
    return invalid_argument("source lacks table, commit_lsn or ordinal");
  }
  c.table = table->get<std::string>();
  auto parsed = pg::Lsn::parse(lsn->get_ref<const std::string&>());
  if (!parsed) return invalid_argument("bad commit_lsn");
  c.version.lsn = parsed->value;
  c.version.ordinal = ordinal->get<std::uint32_t>();
  c.id = lsn->get<std::string>() + ":" + std::to_string(c.version.ordinal);
  if (const auto ts = source->find("commit_ts"); ts != source->end() && ts->is_string()) {
    if (auto us = parse_rfc3339_us(ts->get_ref<const std::string&>())) c.commit_unix_us = *us;
  }
  if (auto after = v.find("after"); after != v.end()) c.after = std::move(*after);
  if (auto before = v.find("before"); before != v.end()) c.before = std::move(*before);
  if ((c.op == 'c' || c.op == 'u' || c.op == 'r') && !c.after.is_object()) {
    return invalid_argument("no after image");
  }
  if (auto unchanged = v.find("unchanged"); unchanged != v.end() && unchanged->is_array()) {
    for (const auto& u : *unchanged) {
      if (!u.is_string()) return invalid_argument("bad unchanged list");
      c.unchanged.push_back(u.get<std::string>());
    }
  }
  if (!types_text.empty()) {
    auto types = cache->intern(d.topic, types_text);
    if (!types) return types.error();
    c.types = std::move(*types);
  } else if (auto types = v.find("types"); types != v.end() && types->is_object()) {
    for (const auto& t : *types) {
      if (!t.is_string()) return invalid_argument("bad types");
    }
    c.types = std::make_shared<const nlohmann::json>(std::move(*types));
  }
  if (c.op != 't') {
    // Checked for its shape here, parsed where it is used (key()).
    const std::string_view k = d.key;
    const auto first = k.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos || k[first] != '{' ||
        k.find('"', first) == std::string_view::npos) {
      return invalid_argument("no key");
    }
    c.key_text = d.key;
  }
  return c;
}

namespace {

// The fast reading: simdjson's on-demand parser (SIMD scanning, no token buffer) walks the
// envelope once and builds only `after` and `before` as trees. It takes a change only when every
// check passes and leaves anything else (a missing field, a wrong type, trailing text) to
// parse_change_reference(), so both give the same result and every error reads the same. What
// it does not use it still walks: a value nlohmann would reject is rejected here too.
namespace od = simdjson::ondemand;

// Builds `v` as nlohmann would read it into `*out`, or only checks it when `out` is null.
bool to_json(od::value v, nlohmann::json* out) {
  od::json_type type;
  if (v.type().get(type)) return false;
  switch (type) {
    case od::json_type::object: {
      od::object object;
      if (v.get_object().get(object)) return false;
      nlohmann::json::object_t* members = nullptr;
      if (out != nullptr) {
        *out = nlohmann::json::object();
        members = &out->get_ref<nlohmann::json::object_t&>();
      }
      for (auto member : object) {
        od::field field;
        std::string_view key;
        if (std::move(member).get(field) || field.unescaped_key().get(key)) return false;
        if (members == nullptr) {
          if (!to_json(field.value(), nullptr)) return false;
          continue;
        }
        nlohmann::json value;
        if (!to_json(field.value(), &value)) return false;
        members->insert_or_assign(std::string(key), std::move(value));  // the last one wins
      }
      return true;
    }
    case od::json_type::array: {
      od::array array;
      if (v.get_array().get(array)) return false;
      if (out != nullptr) *out = nlohmann::json::array();
      for (auto element : array) {
        od::value e;
        if (element.get(e)) return false;
        if (out == nullptr) {
          if (!to_json(e, nullptr)) return false;
          continue;
        }
        nlohmann::json value;
        if (!to_json(e, &value)) return false;
        out->push_back(std::move(value));
      }
      return true;
    }
    case od::json_type::string: {
      std::string_view text;
      if (v.get_string().get(text)) return false;
      if (out != nullptr) *out = std::string(text);
      return true;
    }
    case od::json_type::number: {
      od::number_type kind;
      if (v.get_number_type().get(kind)) return false;
      if (kind == od::number_type::floating_point_number) {
        double x;
        if (v.get_double().get(x)) return false;
        if (out != nullptr) *out = x;
      } else if (kind == od::number_type::signed_integer) {
        const bool negative = v.is_negative();
        std::int64_t x;
        if (v.get_int64().get(x)) return false;
        // nlohmann reads an integer without a minus sign as unsigned, "-0" as signed.
        if (out != nullptr) {
          if (negative) {
            *out = x;
          } else {
            *out = static_cast<std::uint64_t>(x);
          }
        }
      } else {
        std::uint64_t x;
        if (v.get_uint64().get(x)) return false;
        if (out != nullptr) *out = x;
      }
      return true;
    }
    case od::json_type::boolean: {
      bool b;
      if (v.get_bool().get(b)) return false;
      if (out != nullptr) *out = b;
      return true;
    }
    case od::json_type::null: {
      bool null = false;
      if (v.is_null().get(null) || !null) return false;
      if (out != nullptr) *out = nullptr;
      return true;
    }
  }
  return false;
}

bool read_string(od::value v, std::string& out) {
  std::string_view text;
  if (v.get_string().get(text)) return false;
  out.assign(text);
  return true;
}

// What the envelope's "source" says; a later "source" member replaces an earlier one whole.
struct SourceFields {
  std::string table, lsn;
  std::optional<std::uint64_t> ordinal;
  std::int64_t commit_unix_us = 0;
};

bool read_source(od::value v, SourceFields& out) {
  out = SourceFields{};
  od::object source;
  if (v.get_object().get(source)) return false;
  std::optional<std::string> table, lsn;
  for (auto member : source) {
    od::field field;
    std::string_view key;
    if (std::move(member).get(field) || field.unescaped_key().get(key)) return false;
    od::value& value = field.value();
    od::json_type type;
    if (value.type().get(type)) return false;
    if (key == "table" && type == od::json_type::string) {
      table.emplace();
      if (!read_string(value, *table)) return false;
    } else if (key == "commit_lsn" && type == od::json_type::string) {
      lsn.emplace();
      if (!read_string(value, *lsn)) return false;
    } else if (key == "ordinal" && type == od::json_type::number) {
      od::number_type kind;
      std::uint64_t n;
      if (value.get_number_type().get(kind) || kind == od::number_type::floating_point_number ||
          value.is_negative() || value.get_uint64().get(n)) {
        return false;
      }
      out.ordinal = n;
    } else if (key == "commit_ts" && type == od::json_type::string) {
      std::string ts;
      if (!read_string(value, ts)) return false;
      out.commit_unix_us = parse_rfc3339_us(ts).value_or(0);
    } else {
      // Anything else, or a field of another type than the one it must have: a later member of
      // the same name decides in nlohmann's reading, so the reference judges.
      if (key == "table" || key == "commit_lsn" || key == "ordinal") return false;
      if (key == "commit_ts") out.commit_unix_us = 0;
      if (!to_json(value, nullptr)) return false;
    }
  }
  if (!table || !lsn) return false;
  out.table = std::move(*table);
  out.lsn = std::move(*lsn);
  return true;
}

// The change, or nullopt when parse_change_reference() is to judge it.
std::optional<Change> parse_change_fast(const bus::Delivery& d, TypesCache* cache) {
  thread_local od::parser parser;
  thread_local std::string padded;
  padded.reserve(d.value.size() + simdjson::SIMDJSON_PADDING);
  padded.assign(d.value);
  od::document doc;
  if (parser.iterate(simdjson::padded_string_view(padded.data(), padded.size(), padded.capacity()))
          .get(doc)) {
    return std::nullopt;
  }
  // Nothing may follow the object: its text must end where the input does.
  std::string_view whole;
  if (doc.raw_json().get(whole)) return std::nullopt;
  const auto last = std::string_view(d.value).find_last_not_of(" \t\r\n");
  if (whole.empty() || last == std::string_view::npos ||
      whole.data() + whole.size() != padded.data() + last + 1) {
    return std::nullopt;
  }
  doc.rewind();
  od::object envelope;
  if (doc.get_object().get(envelope)) return std::nullopt;
  Change c;
  std::string op;
  SourceFields source;
  bool has_source = false;
  for (auto member : envelope) {
    od::field field;
    std::string_view key;
    if (std::move(member).get(field) || field.unescaped_key().get(key)) return std::nullopt;
    od::value& v = field.value();
    if (key == "op") {
      if (!read_string(v, op)) return std::nullopt;
    } else if (key == "source") {
      if (!read_source(v, source)) return std::nullopt;
      has_source = true;
    } else if (key == "after") {
      if (!to_json(v, &c.after)) return std::nullopt;
    } else if (key == "before") {
      if (!to_json(v, &c.before)) return std::nullopt;
    } else if (key == "unchanged") {
      od::array list;
      if (v.get_array().get(list)) return std::nullopt;
      c.unchanged.clear();
      for (auto element : list) {
        od::value e;
        std::string name;
        if (element.get(e) || !read_string(e, name)) return std::nullopt;
        c.unchanged.push_back(std::move(name));
      }
    } else if (key == "types") {
      // Twice: which one counts depends on where the first one is (parse_change_reference()).
      if (c.types != nullptr) return std::nullopt;
      od::object types;
      std::string_view text;
      if (v.get_object().get(types) || types.raw_json().get(text)) return std::nullopt;
      if (cache != nullptr) {
        auto interned = cache->intern(d.topic, text);
        if (!interned) return std::nullopt;
        c.types = std::move(*interned);
      } else {
        auto parsed = parse_types(text);
        if (!parsed) return std::nullopt;
        c.types = std::move(*parsed);
      }
    } else if (!to_json(v, nullptr)) {
      return std::nullopt;
    }
  }
  if (op.size() != 1 || !has_source || !source.ordinal) return std::nullopt;
  c.op = op[0];
  if (c.op != 'c' && c.op != 'u' && c.op != 'd' && c.op != 't' && c.op != 'r') return std::nullopt;
  auto lsn = pg::Lsn::parse(source.lsn);
  if (!lsn) return std::nullopt;
  c.table = std::move(source.table);
  c.version.lsn = lsn->value;
  c.version.ordinal = static_cast<std::uint32_t>(*source.ordinal);
  c.id = source.lsn + ":" + std::to_string(c.version.ordinal);
  c.commit_unix_us = source.commit_unix_us;
  if ((c.op == 'c' || c.op == 'u' || c.op == 'r') && !c.after.is_object()) return std::nullopt;
  if (c.op != 't') {
    const std::string_view k = d.key;
    const auto first = k.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos || k[first] != '{' ||
        k.find('"', first) == std::string_view::npos) {
      return std::nullopt;
    }
    c.key_text = d.key;
  }
  return c;
}

}  // namespace

Result<Change> parse_change(const bus::Delivery& d, TypesCache* cache) {
  if (auto c = parse_change_fast(d, cache)) return std::move(*c);
  return parse_change_reference(d, cache);
}

std::optional<Position> parse_position(std::string_view text) {
  Position p;
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) {
    if (!parse_u64(text, p.high)) return std::nullopt;
    return p;
  }
  if (!parse_u64(text.substr(0, dash), p.high) || !parse_u64(text.substr(dash + 1), p.low)) {
    return std::nullopt;
  }
  return p;
}

std::string_view base_type(std::string_view pg_type) {
  const auto open = pg_type.find('(');
  return open == std::string_view::npos ? pg_type : pg_type.substr(0, open);
}

TypeChange classify_type_change(std::string_view from, std::string_view to) {
  if (from == to) return TypeChange::kSame;
  const std::string_view f = base_type(from), t = base_type(to);
  if (t == "text") return TypeChange::kWiden;
  if (integer_rank(f) > 0 && integer_rank(t) > 0) {
    if (t == "numeric") {
      // An unconstrained numeric holds every integer; numeric(p,s) only up to p - s digits.
      if (type_length(to) < 0) return TypeChange::kWiden;
      if (f == "numeric") return TypeChange::kNarrow;
      return TypeChange::kNarrow;
    }
    return integer_rank(t) > integer_rank(f) ? TypeChange::kWiden : TypeChange::kNarrow;
  }
  if (f == "real" && t == "double precision") return TypeChange::kWiden;
  if (f == "character varying" && t == "character varying") {
    const long a = type_length(from), b = type_length(to);
    return b < 0 || (a >= 0 && b >= a) ? TypeChange::kWiden : TypeChange::kNarrow;
  }
  if (f == "character" && t == "character varying") {
    const long a = type_length(from), b = type_length(to);
    return b < 0 || (a >= 0 && b >= a) ? TypeChange::kWiden : TypeChange::kNarrow;
  }
  return TypeChange::kNarrow;
}

std::string postgres_column_type(std::string_view pg_type) {
  if (pg_type.starts_with("oid ") || pg_type.empty()) return "text";
  return std::string(pg_type);
}

std::string clickhouse_column_type(std::string_view pg_type, bool key) {
  const std::string_view b = base_type(pg_type);
  std::string t = "String";
  if (b == "boolean")
    t = "UInt8";
  else if (b == "smallint")
    t = "Int16";
  else if (b == "integer")
    t = "Int32";
  else if (b == "bigint")
    t = "Int64";
  else if (b == "real")
    t = "Float32";
  else if (b == "double precision")
    t = "Float64";
  else if (b == "uuid")
    t = "UUID";
  return key ? t : "Nullable(" + t + ")";
}

}  // namespace hi::sinks
