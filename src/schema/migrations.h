// The platform's schema: the migrations of sql/migrations/, compiled into the binary.
#pragma once

#include <span>

#include "pg/migrate.h"

namespace hi::schema {

// Every migration in version order.
std::span<const pg::Migration> migrations();

}  // namespace hi::schema
