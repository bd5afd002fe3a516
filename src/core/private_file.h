// Files only their owner may read, written so that no reader ever sees half of one: the key
// files of the vault (vault/) and of the sinks' masking (sinks/masking.h).
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"

namespace hi {

// Creates `dir` (and its missing parents) and makes it private to its owner (0700).
Status make_private_dir(const std::string& dir);

// fsync() of a directory: makes the names created in it durable.
Status fsync_dir(const std::string& dir);

// Writes `contents` as DIR/<name>, mode 0600: a private temporary file in DIR, synced, then
// link()ed to its name, and DIR synced. link() rather than rename(): when DIR/<name> exists
// (another process wrote it meanwhile) the answer is kAlreadyExists ("<what> <path> exists")
// and the file is left as it is. The temporary file is removed in every case. `contents` is
// written from where it is, never copied.
Status create_private_file(const std::string& dir, const std::string& name,
                           std::string_view contents, std::string_view what);

}  // namespace hi
