#include "consume/cache.h"

namespace hi::consume {

// The stored entry's through_seq, or nil when there is none (or it is not ours).
#define HI_CACHE_STORED_SEQ                                                 \
  "local cur = redis.call('GET', KEYS[1])\n"                                \
  "local seq = nil\n"                                                       \
  "if cur then\n"                                                           \
  "  local ok, e = pcall(cjson.decode, cur)\n"                              \
  "  if ok and type(e) == 'table' then seq = tonumber(e.through_seq) end\n" \
  "end\n"

const char* const kCacheFillScript = HI_CACHE_STORED_SEQ
    "if seq and seq > tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])\n"
    "return 1\n";

// The tombstone is built as text: cjson.encode would print a large number in %.14g.
const char* const kCacheInvalidateScript = HI_CACHE_STORED_SEQ
    "if seq and seq > tonumber(ARGV[1]) then return 0 end\n"
    "redis.call('SET', KEYS[1], '{\"through_seq\":' .. ARGV[1] .. ',\"invalidated\":true}', "
    "'PX', ARGV[2])\n"
    "return 1\n";

#undef HI_CACHE_STORED_SEQ

RedisCommand cache_invalidation(const std::string& key, std::int64_t through_seq,
                                std::chrono::milliseconds ttl) {
  return {"EVAL", kCacheInvalidateScript,      "1",
          key,    std::to_string(through_seq), std::to_string(ttl.count())};
}

}  // namespace hi::consume
