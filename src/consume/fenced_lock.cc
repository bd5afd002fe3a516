#include "consume/fenced_lock.h"

namespace hi::consume {
namespace {

// KEYS: lock1, fence1, lock2, fence2, ...; ARGV: lease_ms, owner. A lock held under our own
// name ("<owner>:<digits>") was left by a previous process of this member: taken over.
constexpr const char* kAcquire = R"lua(
local out = {}
local mine = ARGV[2] .. ':'
for i = 1, #KEYS, 2 do
  local nxt = tonumber(redis.call('GET', KEYS[i + 1]) or '0') + 1
  local held = redis.call('GET', KEYS[i])
  if held and string.sub(held, 1, #mine) == mine and
      string.match(string.sub(held, #mine + 1), '^%d+$') then
    redis.call('DEL', KEYS[i])
  end
  if redis.call('SET', KEYS[i], ARGV[2] .. ':' .. nxt, 'NX', 'PX', ARGV[1]) then
    redis.call('SET', KEYS[i + 1], nxt)
    out[#out + 1] = nxt
  else
    out[#out + 1] = 0
  end
end
return out
)lua";

// KEYS: locks; ARGV: the values they were set to. Compare-and-delete.
constexpr const char* kRelease = R"lua(
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
)lua";

// KEYS: fence; ARGV: minimum.
constexpr const char* kRaise = R"lua(
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
)lua";

constexpr const char* kScripts[] = {kAcquire, kRelease, kRaise};

}  // namespace

std::string lock_key(std::string_view user_id) { return "lock:recalc:" + std::string(user_id); }
std::string fence_key(std::string_view user_id) { return "fence:recalc:" + std::string(user_id); }

Result<redis::Reply> FencedLocks::eval(redis::Client& redis, int script,
                                       std::vector<std::string> argv) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (sha_[script].empty()) {
      auto loaded = redis.command({"SCRIPT", "LOAD", kScripts[script]});
      if (!loaded) return loaded.error().wrap("lock script load");
      if (loaded->is_error()) return internal_error("lock script load: " + loaded->str);
      sha_[script] = loaded->str;
    }
    argv[1] = sha_[script];
    auto r = redis.command(argv);
    if (!r) return r.error().wrap("lock script");
    if (r->is_error()) {
      if (r->str.rfind("NOSCRIPT", 0) == 0) {  // the server restarted or flushed its scripts
        sha_[script].clear();
        continue;
      }
      return internal_error("lock script: " + r->str);
    }
    return r;
  }
  return unavailable("lock script: NOSCRIPT after reloading");
}

Result<std::vector<std::int64_t>> FencedLocks::try_acquire(redis::Client& redis,
                                                           const std::vector<std::string>& users) {
  std::vector<std::int64_t> tokens;
  if (users.empty()) return tokens;
  std::vector<std::string> argv = {"EVALSHA", "", std::to_string(users.size() * 2)};
  argv.reserve(3 + users.size() * 2 + 2);
  for (const auto& u : users) {
    argv.push_back(lock_key(u));
    argv.push_back(fence_key(u));
  }
  argv.push_back(std::to_string(lease_.count()));
  argv.push_back(owner_);
  auto r = eval(redis, 0, std::move(argv));
  if (!r) return r.error();
  if (r->elements.size() != users.size()) return internal_error("lock script: short reply");
  tokens.reserve(users.size());
  for (const auto& e : r->elements) tokens.push_back(e.integer);
  return tokens;
}

namespace {

// EVALSHA of the release script (its sha left empty) over the locks these tokens hold; nullopt
// when they hold none.
std::optional<std::vector<std::string>> release_argv(const std::string& owner,
                                                     const std::vector<std::string>& users,
                                                     const std::vector<std::int64_t>& tokens) {
  std::vector<std::string> argv = {"EVALSHA", "", "0"};
  std::vector<std::string> values;
  std::size_t n = 0;
  for (std::size_t i = 0; i < users.size() && i < tokens.size(); ++i) {
    if (tokens[i] <= 0) continue;
    argv.push_back(lock_key(users[i]));
    values.push_back(owner + ":" + std::to_string(tokens[i]));
    ++n;
  }
  if (n == 0) return std::nullopt;
  argv[2] = std::to_string(n);
  argv.insert(argv.end(), values.begin(), values.end());
  return argv;
}

}  // namespace

Result<std::int64_t> FencedLocks::release(redis::Client& redis,
                                          const std::vector<std::string>& users,
                                          const std::vector<std::int64_t>& tokens) {
  auto argv = release_argv(owner_, users, tokens);
  if (!argv) return 0;
  auto r = eval(redis, 1, std::move(*argv));
  if (!r) return r.error();
  return r->integer;
}

Result<std::optional<std::vector<std::string>>> FencedLocks::release_command(
    redis::Client& redis, const std::vector<std::string>& users,
    const std::vector<std::int64_t>& tokens) {
  auto argv = release_argv(owner_, users, tokens);
  if (!argv) return argv;
  if (sha_[1].empty()) {
    auto loaded = redis.command({"SCRIPT", "LOAD", kScripts[1]});
    if (!loaded) return loaded.error().wrap("lock script load");
    if (loaded->is_error()) return internal_error("lock script load: " + loaded->str);
    sha_[1] = loaded->str;
  }
  (*argv)[1] = sha_[1];
  return argv;
}

Status FencedLocks::raise_fence(redis::Client& redis, const std::string& user, std::int64_t token) {
  auto r = eval(redis, 2, {"EVALSHA", "", "1", fence_key(user), std::to_string(token)});
  if (!r) return r.error();
  return {};
}

}  // namespace hi::consume
