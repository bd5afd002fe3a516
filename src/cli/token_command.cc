// `hashinsight token --user U --tenant T --scopes a,b [--ttl S]`: a signed API token for curl
// and scripts, printed alone on stdout. Scopes are checked against the user's roles in the
// tenant (user_roles -> role_permissions), so the command cannot mint more than the user has.
#include <algorithm>
#include <cstdio>
#include <ctime>

#include "api/auth.h"
#include "cli/common.h"
#include "core/strings.h"

namespace hi::cli {
namespace {

struct TokenFlags {
  std::string user;
  std::string tenant;
  std::string scopes;
  long ttl_s = 3600;
};

bool digits(const std::string& s) {
  return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

void add_token_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("token", "print a signed API token (JWT) for a seeded user");
  auto tf = std::make_shared<TokenFlags>();
  cmd->add_option("--user", tf->user, "user id (e.g. 101)")->required();
  cmd->add_option("--tenant", tf->tenant, "tenant id (e.g. 1)")->required();
  cmd->add_option("--scopes", tf->scopes,
                  "comma-separated scopes, e.g. miners:write,portfolio:read")
      ->required();
  cmd->add_option("--ttl", tf->ttl_s, "validity in seconds")->check(CLI::Range(1L, 31L * 86400));
  cmd->callback([&flags, tf] {
    const Config cfg = load_config(flags);
    if (!digits(tf->user) || !digits(tf->tenant)) {
      fail(kExitUsage, "--user and --tenant take the numeric ids of the seed (docs/seed.md)");
    }
    const std::vector<std::string> wanted = split_list(tf->scopes);
    if (wanted.empty()) fail(kExitUsage, "--scopes names no scope");

    // The user's roles decide which scopes a token may carry.
    auto conn = connect_owner(cfg);
    auto granted = conn.exec(
        "SELECT DISTINCT p.scope FROM users u "
        "LEFT JOIN user_roles ur ON ur.tenant_id = u.tenant_id AND ur.user_id = u.id "
        "LEFT JOIN role_permissions rp ON rp.role_id = ur.role_id "
        "LEFT JOIN permissions p ON p.id = rp.permission_id "
        "WHERE u.tenant_id = $1::bigint AND u.id = $2::bigint",
        {tf->tenant, tf->user});
    if (!granted) fail(kExitFailure, "read the user's roles: " + granted.error().message);
    if (granted->empty()) {
      fail(kExitUsage, "user " + tf->user + " does not exist in tenant " + tf->tenant);
    }
    std::vector<std::string> allowed;
    std::string allowed_text;
    for (int r = 0; r < granted->rows(); ++r) {
      if (granted->is_null(r, 0)) continue;
      allowed.emplace_back(granted->text(r, 0));
      allowed_text += (allowed_text.empty() ? "" : ",") + allowed.back();
    }
    std::string refused;
    for (const auto& s : wanted) {
      if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
        refused += (refused.empty() ? "" : ",") + s;
      }
    }
    if (!refused.empty()) {
      fail(kExitUsage, "scopes outside the roles of user " + tf->user + " in tenant " + tf->tenant +
                           ": " + refused + " (allowed: " + allowed_text + ")");
    }

    api::TokenOptions options;
    options.secret = cfg.is_set("JWT_SECRET")
                         ? cfg.str("JWT_SECRET")
                         : read_or_create_secret(data_dir(cfg), "jwt_secret", 32);
    const std::string token = api::issue_token(options, tf->user, tf->tenant, wanted,
                                               std::chrono::seconds(tf->ttl_s), std::time(nullptr));
    std::printf("%s\n", token.c_str());
  });
}

}  // namespace hi::cli
