#include "sinks/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace hi::sinks {
namespace {

constexpr std::array<std::pair<Mask, std::string_view>, 8> kMaskNames = {{
    {Mask::kKeep, "keep"},
    {Mask::kDrop, "drop"},
    {Mask::kRedact, "redact"},
    {Mask::kNull, "null"},
    {Mask::kSha256, "sha256"},
    {Mask::kHmacSha256, "hmac-sha256"},
    {Mask::kPartial, "partial"},
    {Mask::kEmailDomain, "email-domain"},
}};

constexpr std::array<std::string_view, 6> kSslModes = {"disable", "allow",     "prefer",
                                                       "require", "verify-ca", "verify-full"};

constexpr int kMaxKeepLast = 64;

std::optional<Mask> mask_from(std::string_view name) {
  for (const auto& [mask, text] : kMaskNames) {
    if (text == name) return mask;
  }
  return std::nullopt;
}

bool is_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool is_word_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

// [A-Za-z_][A-Za-z0-9_]*
bool is_identifier(std::string_view s) {
  return !s.empty() && !(s[0] >= '0' && s[0] <= '9') &&
         std::all_of(s.begin(), s.end(), is_word_char);
}

// "schema.table": word characters and exactly one dot, neither side empty.
bool is_qualified_table(std::string_view s) {
  const auto dot = s.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == s.size()) return false;
  const auto word = [](std::string_view part) {
    return std::all_of(part.begin(), part.end(), is_word_char);
  };
  return word(s.substr(0, dot)) && word(s.substr(dot + 1));
}

bool starts_with_any(std::string_view s, std::initializer_list<std::string_view> prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](std::string_view p) { return s.starts_with(p); });
}

// Walks the YAML tree; every error is "file:line: context: reason".
class Parser {
 public:
  explicit Parser(std::string_view file_name) : file_(file_name) {}

  Result<SinksConfig> parse(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) return error(root, "", "missing 'destinations'");
    if (!root.IsMap()) return error(root, "", "expected a map with 'destinations'");
    if (auto s = check_keys(root, "", {"destinations"}); !s) return s.error();
    const YAML::Node list = root["destinations"];
    if (!list) return error(root, "", "missing 'destinations'");
    if (!list.IsSequence() || list.size() == 0) {
      return error(list, "", "'destinations' must be a non-empty list");
    }
    SinksConfig config;
    std::set<std::string> names;
    for (std::size_t i = 0; i < list.size(); ++i) {
      auto d = parse_destination(list[i], i);
      if (!d) return d.error();
      if (!names.insert(d->name).second) {
        return error(list[i]["name"], "", "duplicate destination name '" + d->name + "'");
      }
      config.destinations.push_back(std::move(*d));
    }
    return config;
  }

 private:
  int line_of(const YAML::Node& node) const {
    const YAML::Mark mark = node.Mark();
    return mark.is_null() ? 1 : mark.line + 1;
  }

  Error error(const YAML::Node& at, const std::string& context, const std::string& reason) const {
    std::string message = std::string(file_) + ":" + std::to_string(line_of(at)) + ": ";
    if (!context.empty()) message += context + ": ";
    return invalid_argument(message + reason);
  }

  // Refuses unknown and repeated keys: a misspelt `mask` must not leave a column in clear.
  Status check_keys(const YAML::Node& map, const std::string& context,
                    std::initializer_list<std::string_view> allowed) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) return error(key, context, "keys must be text");
      const std::string& name = key.Scalar();
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        std::string known;
        for (std::string_view a : allowed) known += (known.empty() ? "" : ", ") + std::string(a);
        return error(key, context, "unknown key '" + name + "' (expected " + known + ")");
      }
      if (!seen.insert(name).second) return error(key, context, "duplicate key '" + name + "'");
    }
    return ok_status();
  }

  // The text of a scalar field; `parent` locates the error when the field is missing.
  Result<std::string> text(const YAML::Node& parent, std::string_view key,
                           const std::string& context) const {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return error(parent, context, "missing '" + std::string(key) + "'");
    if (!node.IsScalar()) return error(node, context, "'" + std::string(key) + "' must be text");
    return node.Scalar();
  }

  Result<DestinationSpec> parse_destination(const YAML::Node& node, std::size_t index) {
    std::string context = "destination " + std::to_string(index + 1);
    if (!node.IsMap()) return error(node, context, "expected a map");
    // Errors name the destination as soon as it has a valid name (even before checking it).
    if (const YAML::Node n = node["name"]; n.IsScalar() && is_name(n.Scalar())) {
      context = "destination '" + n.Scalar() + "'";
    }
    if (auto s = check_keys(node, context, {"name", "type", "url", "tls", "tables"}); !s) {
      return s.error();
    }
    DestinationSpec dest;
    auto name = text(node, "name", context);
    if (!name) return name.error();
    if (!is_name(*name)) {
      return error(node["name"], context, "name '" + *name + "' must match [a-z0-9_-]+");
    }
    dest.name = *name;
    context = "destination '" + dest.name + "'";

    auto type = text(node, "type", context);
    if (!type) return type.error();
    if (*type == "postgres") {
      dest.type = DestinationType::kPostgres;
    } else if (*type == "clickhouse") {
      dest.type = DestinationType::kClickHouse;
    } else {
      return error(node["type"], context, "unknown type '" + *type + "' (postgres or clickhouse)");
    }

    auto url = text(node, "url", context);
    if (!url) return url.error();
    const bool postgres = dest.type == DestinationType::kPostgres;
    const bool url_ok = postgres ? starts_with_any(*url, {"postgresql://", "postgres://"})
                                 : starts_with_any(*url, {"http://", "https://"});
    if (!url_ok) {
      // The URL may hold a password: it is not repeated here.
      return error(node["url"], context,
                   postgres ? "url must start with postgresql:// or postgres://"
                            : "url must start with http:// or https://");
    }
    dest.url = *url;

    if (const YAML::Node tls = node["tls"]) {
      auto spec = parse_tls(tls, context);
      if (!spec) return spec.error();
      dest.tls = std::move(*spec);
      // ClickHouse's TLS is its https:// URL, verified against ca_file (the system's CAs when
      // absent): an sslmode, or a CA for a plain http:// URL, would suggest a protection that
      // is not there.
      if (!postgres && !dest.tls.sslmode.empty()) {
        return error(tls["sslmode"], context,
                     "sslmode is PostgreSQL's; ClickHouse is reached over TLS by an https:// url");
      }
      if (!postgres && !dest.tls.ca_file.empty() && !dest.url.starts_with("https://")) {
        return error(tls["ca_file"], context, "ca_file needs an https:// url");
      }
    }

    const YAML::Node tables = node["tables"];
    if (!tables) return error(node, context, "missing 'tables'");
    if (!tables.IsSequence() || tables.size() == 0) {
      return error(tables, context, "'tables' must be a non-empty list");
    }
    std::set<std::string> sources;
    std::map<std::string, std::string> targets;  // target -> its source
    for (const YAML::Node& t : tables) {
      auto table = parse_table(t, context);
      if (!table) return table.error();
      if (!sources.insert(table->source).second) {
        return error(t["source"], context, "table " + table->source + " is listed twice");
      }
      // Two sources filling one target table would mix their rows.
      const auto [it, inserted] = targets.emplace(table->target, table->source);
      if (!inserted) {
        return error(t, context,
                     "tables " + it->second + " and " + table->source + " share the target '" +
                         table->target + "' (set `target` on one of them)");
      }
      dest.tables.push_back(std::move(*table));
    }
    return dest;
  }

  Result<TlsSpec> parse_tls(const YAML::Node& node, const std::string& context) const {
    if (!node.IsMap()) return error(node, context, "'tls' must be a map");
    if (auto s = check_keys(node, context, {"sslmode", "ca_file"}); !s) return s.error();
    TlsSpec tls;
    if (node["sslmode"]) {
      auto mode = text(node, "sslmode", context);
      if (!mode) return mode.error();
      if (std::find(kSslModes.begin(), kSslModes.end(), *mode) == kSslModes.end()) {
        return error(node["sslmode"], context,
                     "unknown sslmode '" + *mode +
                         "' (disable, allow, prefer, require, verify-ca or verify-full)");
      }
      tls.sslmode = *mode;
    }
    if (node["ca_file"]) {
      auto ca = text(node, "ca_file", context);
      if (!ca) return ca.error();
      std::error_code ec;
      if (!std::filesystem::is_regular_file(*ca, ec)) {
        return error(node["ca_file"], context, "ca_file " + *ca + " is not a file");
      }
      tls.ca_file = *ca;
    }
    return tls;
  }

  Result<TableSpec> parse_table(const YAML::Node& node, const std::string& context) const {
    if (!node.IsMap()) return error(node, context, "each table must be a map");
    if (auto s = check_keys(node, context, {"source", "target", "default", "columns"}); !s) {
      return s.error();
    }
    TableSpec table;
    auto source = text(node, "source", context);
    if (!source) return source.error();
    if (!is_qualified_table(*source)) {
      return error(node["source"], context,
                   "source '" + *source + "' must be schema.table (letters, digits, _)");
    }
    table.source = *source;
    const std::string table_context = context + ": table " + table.source;

    table.target = table.source.substr(table.source.find('.') + 1);
    if (node["target"]) {
      auto target = text(node, "target", table_context);
      if (!target) return target.error();
      table.target = *target;
    }
    if (!is_identifier(table.target)) {
      const YAML::Node at = node["target"] ? node["target"] : node["source"];
      return error(at, table_context,
                   "target '" + table.target + "' must match [A-Za-z_][A-Za-z0-9_]*");
    }

    if (node["default"]) {
      auto def = text(node, "default", table_context);
      if (!def) return def.error();
      if (*def == "keep") {
        table.default_mask = Mask::kKeep;
      } else if (*def == "drop") {
        table.default_mask = Mask::kDrop;
      } else {
        return error(node["default"], table_context,
                     "unknown default '" + *def + "' (keep or drop)");
      }
    }

    if (const YAML::Node columns = node["columns"]) {
      if (!columns.IsMap()) return error(columns, table_context, "'columns' must be a map");
      std::set<std::string> seen;
      for (const auto& entry : columns) {
        if (!entry.first.IsScalar() || entry.first.Scalar().empty()) {
          return error(entry.first, table_context, "column names must be non-empty text");
        }
        const std::string& name = entry.first.Scalar();
        if (!seen.insert(name).second) {
          return error(entry.first, table_context, "column '" + name + "' is listed twice");
        }
        auto rule = parse_column(entry.first, entry.second, table, context);
        if (!rule) return rule.error();
        table.columns.emplace(name, *rule);
      }
    }
    return table;
  }

  // `table` has its source and default already.
  Result<ColumnRule> parse_column(const YAML::Node& key, const YAML::Node& node,
                                  const TableSpec& table, const std::string& context) const {
    const std::string& name = key.Scalar();
    const std::string column_context = context + ": column '" + name + "' of " + table.source;
    if (!node.IsMap()) {
      return error(node.IsNull() ? key : node, column_context,
                   "expected a map such as {mask: redact}");
    }
    if (auto s = check_keys(node, column_context, {"mask", "keep_last", "pii"}); !s) {
      return s.error();
    }
    ColumnRule rule;
    rule.mask = table.default_mask;
    const bool explicit_mask = static_cast<bool>(node["mask"]);
    if (explicit_mask && node["mask"].IsNull()) {
      // YAML reads `mask: null` (and `mask: ~`, `mask:`) as a null, not as the text "null".
      rule.mask = Mask::kNull;
    } else if (explicit_mask) {
      auto mask_name = text(node, "mask", column_context);
      if (!mask_name) return mask_name.error();
      const auto mask = mask_from(*mask_name);
      if (!mask) {
        return error(node["mask"], column_context,
                     "unknown mask '" + *mask_name +
                         "' (keep, drop, redact, null, sha256, hmac-sha256, partial or "
                         "email-domain)");
      }
      rule.mask = *mask;
    }
    if (const YAML::Node keep_last = node["keep_last"]) {
      if (rule.mask != Mask::kPartial) {
        return error(keep_last, column_context, "keep_last applies to mask partial only");
      }
      int n = 0;
      if (!keep_last.IsScalar() || !YAML::convert<int>::decode(keep_last, n) || n < 1 ||
          n > kMaxKeepLast) {
        return error(keep_last, column_context,
                     "keep_last must be a whole number from 1 to " + std::to_string(kMaxKeepLast));
      }
      rule.keep_last = n;
    }
    if (const YAML::Node pii = node["pii"]) {
      bool flag = false;
      if (!pii.IsScalar() || !YAML::convert<bool>::decode(pii, flag)) {
        return error(pii, column_context, "pii must be true or false");
      }
      rule.pii = flag;
    }
    if (rule.pii && rule.mask == Mask::kKeep) {
      return error(key, context,
                   "column '" + name + "' of " + table.source +
                       " is pii and would be sent in clear (mask: keep)");
    }
    return rule;
  }

  std::string_view file_;
};

}  // namespace

std::string_view to_string(Mask mask) {
  for (const auto& [m, text] : kMaskNames) {
    if (m == mask) return text;
  }
  return "unknown";
}

std::size_t default_batch_size(DestinationType type) {
  return type == DestinationType::kClickHouse ? 20'000 : 5'000;
}

std::string_view to_string(DestinationType type) {
  switch (type) {
    case DestinationType::kPostgres:
      return "postgres";
    case DestinationType::kClickHouse:
      return "clickhouse";
  }
  return "unknown";
}

ColumnRule TableSpec::rule(std::string_view column) const {
  if (const auto it = columns.find(std::string(column)); it != columns.end()) return it->second;
  ColumnRule rule;
  rule.mask = default_mask;
  return rule;
}

const TableSpec* DestinationSpec::table(std::string_view source) const {
  for (const TableSpec& t : tables) {
    if (t.source == source) return &t;
  }
  return nullptr;
}

const DestinationSpec* SinksConfig::destination(std::string_view name) const {
  for (const DestinationSpec& d : destinations) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::vector<std::string> SinksConfig::source_tables() const {
  std::set<std::string> all;
  for (const DestinationSpec& d : destinations) {
    for (const TableSpec& t : d.tables) all.insert(t.source);
  }
  return {all.begin(), all.end()};
}

Result<SinksConfig> parse_sinks_config(std::string_view yaml, std::string_view file_name) {
  // yaml-cpp reports syntax errors (and misuse) by exceptions: they stop here.
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    return Parser(file_name).parse(root);
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    return invalid_argument(std::string(file_name) + ":" + std::to_string(line) + ": " + e.msg);
  }
}

Result<SinksConfig> load_sinks_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return not_found("sinks config " + path + " not found");
    return failed_precondition("read sinks config " + path + ": " + std::strerror(err));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return failed_precondition("read sinks config " + path + ": read error");
  return parse_sinks_config(text.str(), path);
}

}  // namespace hi::sinks
