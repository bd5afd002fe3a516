#include "mining/catalog.h"

#include <array>
#include <cctype>

namespace hi::mining {
namespace {

// Append only: ids are database keys (see catalog.h). Columns: id, slug, name, manufacturer,
// TH/s, W, J/TH, release year, typical price USD.
constexpr std::array<MinerModel, 49> kCatalog = {{
    // Bitmain Antminer.
    {1, "antminer-s9", "Antminer S9", "Bitmain", 13.5, 1323, 98.0, 2016, 30},
    {2, "antminer-s17", "Antminer S17", "Bitmain", 56, 2520, 45.0, 2019, 120},
    {3, "antminer-s17-pro", "Antminer S17 Pro", "Bitmain", 53, 2094, 39.5, 2019, 130},
    {4, "antminer-t17", "Antminer T17", "Bitmain", 40, 2200, 55.0, 2019, 90},
    {5, "antminer-s19", "Antminer S19", "Bitmain", 95, 3250, 34.2, 2020, 400},
    {6, "antminer-s19-pro", "Antminer S19 Pro", "Bitmain", 110, 3250, 29.5, 2020, 550},
    {7, "antminer-t19", "Antminer T19", "Bitmain", 84, 3150, 37.5, 2020, 350},
    {8, "antminer-s19j", "Antminer S19j", "Bitmain", 90, 3100, 34.5, 2021, 400},
    {9, "antminer-s19j-pro", "Antminer S19j Pro", "Bitmain", 100, 3050, 30.5, 2021, 600},
    {10, "antminer-s19j-pro-plus", "Antminer S19j Pro+", "Bitmain", 122, 3355, 27.5, 2022, 900},
    {11, "antminer-s19-xp", "Antminer S19 XP", "Bitmain", 140, 3010, 21.5, 2022, 1800},
    {12, "antminer-s19-hydro", "Antminer S19 Hydro", "Bitmain", 158, 5451, 34.5, 2021, 1200},
    {13, "antminer-s19-pro-plus-hydro", "Antminer S19 Pro+ Hydro", "Bitmain", 198, 5445, 27.5, 2022,
     2000},
    {14, "antminer-s19-xp-hydro", "Antminer S19 XP Hydro", "Bitmain", 255, 5304, 20.8, 2022, 3000},
    {15, "antminer-s19k-pro", "Antminer S19k Pro", "Bitmain", 120, 2760, 23.0, 2023, 1300},
    {16, "antminer-s19j-xp", "Antminer S19j XP", "Bitmain", 151, 3247, 21.5, 2023, 1900},
    {17, "antminer-s21", "Antminer S21", "Bitmain", 200, 3500, 17.5, 2023, 3500},
    {18, "antminer-s21-pro", "Antminer S21 Pro", "Bitmain", 234, 3510, 15.0, 2024, 5000},
    {19, "antminer-s21-hydro", "Antminer S21 Hydro", "Bitmain", 335, 5360, 16.0, 2024, 5500},
    {20, "antminer-t21", "Antminer T21", "Bitmain", 190, 3610, 19.0, 2024, 2800},
    {21, "antminer-s21-plus", "Antminer S21+", "Bitmain", 216, 3564, 16.5, 2024, 4000},
    {22, "antminer-s21-plus-hydro", "Antminer S21+ Hydro", "Bitmain", 319, 4785, 15.0, 2024, 6000},
    {23, "antminer-s21-xp", "Antminer S21 XP", "Bitmain", 270, 3645, 13.5, 2024, 7000},
    {24, "antminer-s21-xp-hydro", "Antminer S21 XP Hydro", "Bitmain", 473, 5676, 12.0, 2024, 12000},
    // MicroBT Whatsminer.
    {25, "whatsminer-m20s", "Whatsminer M20S", "MicroBT", 68, 3360, 49.4, 2019, 120},
    {26, "whatsminer-m21s", "Whatsminer M21S", "MicroBT", 56, 3360, 60.0, 2019, 100},
    {27, "whatsminer-m30s", "Whatsminer M30S", "MicroBT", 88, 3344, 38.0, 2020, 350},
    {28, "whatsminer-m30s-plus", "Whatsminer M30S+", "MicroBT", 100, 3400, 34.0, 2020, 450},
    {29, "whatsminer-m30s-plus-plus", "Whatsminer M30S++", "MicroBT", 112, 3472, 31.0, 2020, 550},
    {30, "whatsminer-m31s-plus", "Whatsminer M31S+", "MicroBT", 80, 3360, 42.0, 2020, 250},
    {31, "whatsminer-m50", "Whatsminer M50", "MicroBT", 114, 3306, 29.0, 2022, 900},
    {32, "whatsminer-m50s", "Whatsminer M50S", "MicroBT", 126, 3276, 26.0, 2022, 1200},
    {33, "whatsminer-m50s-plus", "Whatsminer M50S+", "MicroBT", 140, 3360, 24.0, 2023, 1500},
    {34, "whatsminer-m50s-plus-plus", "Whatsminer M50S++", "MicroBT", 150, 3300, 22.0, 2023, 1800},
    {35, "whatsminer-m53s", "Whatsminer M53S", "MicroBT", 260, 6760, 26.0, 2022, 2500},
    {36, "whatsminer-m60", "Whatsminer M60", "MicroBT", 172, 3422, 19.9, 2023, 2400},
    {37, "whatsminer-m60s", "Whatsminer M60S", "MicroBT", 186, 3441, 18.5, 2023, 2900},
    {38, "whatsminer-m63", "Whatsminer M63", "MicroBT", 334, 6646, 19.9, 2023, 4500},
    {39, "whatsminer-m63s", "Whatsminer M63S", "MicroBT", 390, 7215, 18.5, 2023, 5500},
    {40, "whatsminer-m66s", "Whatsminer M66S", "MicroBT", 298, 5513, 18.5, 2023, 4800},
    // Canaan Avalon.
    {41, "avalon-a1166-pro", "Avalon A1166 Pro", "Canaan", 81, 3400, 42.0, 2020, 250},
    {42, "avalon-a1246", "Avalon A1246", "Canaan", 90, 3420, 38.0, 2021, 400},
    {43, "avalon-a1266", "Avalon A1266", "Canaan", 100, 3500, 35.0, 2021, 500},
    {44, "avalon-a1346", "Avalon A1346", "Canaan", 110, 3300, 30.0, 2022, 800},
    {45, "avalon-a1366", "Avalon A1366", "Canaan", 130, 3250, 25.0, 2023, 1200},
    {46, "avalon-a1466", "Avalon A1466", "Canaan", 150, 3230, 21.5, 2023, 1900},
    {47, "avalon-a1566", "Avalon A1566", "Canaan", 185, 3420, 18.5, 2024, 3000},
    // Others.
    {48, "auradine-teraflux-at2880", "Auradine Teraflux AT2880", "Auradine", 260, 4160, 16.0, 2024,
     5500},
    {49, "bitdeer-sealminer-a2", "Bitdeer SealMiner A2", "Bitdeer", 226, 3730, 16.5, 2024, 3500},
}};

}  // namespace

std::span<const MinerModel> catalog() { return kCatalog; }

std::string slugify(std::string_view text) {
  std::string out;
  bool pending_dash = false;
  auto put = [&](std::string_view word) {
    if (pending_dash && !out.empty()) out += '-';
    pending_dash = false;
    out += word;
  };
  for (char raw : text) {
    const auto c = static_cast<unsigned char>(raw);
    if (std::isalnum(c) != 0) {
      const char lower = static_cast<char>(std::tolower(c));
      put(std::string_view(&lower, 1));
    } else if (c == '+') {
      pending_dash = true;
      put("plus");
      pending_dash = true;
    } else {
      pending_dash = true;
    }
  }
  return out;
}

const MinerModel* find_model(std::string_view slug_or_name) {
  const std::string key = slugify(slug_or_name);
  if (key.empty()) return nullptr;
  for (const MinerModel& m : kCatalog) {
    if (m.slug == key) return &m;
  }
  // Without the brand: "s19-pro" matches "antminer-s19-pro" but not "antminer-s19j-pro".
  const std::string suffix = "-" + key;
  const MinerModel* found = nullptr;
  for (const MinerModel& m : kCatalog) {
    if (m.slug.size() > suffix.size() && m.slug.ends_with(suffix)) {
      if (found != nullptr) return nullptr;  // ambiguous
      found = &m;
    }
  }
  return found;
}

const MinerModel* find_model_by_id(int id) {
  if (id < 1 || id > static_cast<int>(kCatalog.size())) return nullptr;
  return &kCatalog[static_cast<std::size_t>(id - 1)];
}

}  // namespace hi::mining
