// The config's keys, written once. Each entry names a key, the Config field it fills,
// its kind (which values it accepts) and what it means. load_config reads by this
// table and config_to_yaml writes by it, in the table's order, so a new key is one
// entry in config_schema.cpp beside its field in config.h.
//
// Invariants: a section's known keys (listed in the unknown-key error) are exactly its
// entries, in table order; every entry is written by config_to_yaml unless its
// `written_if` says otherwise, and what it writes load_config reads back to the same
// value. Checks that involve more than one key are not entries: load_config makes them
// after every key is read (config.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "runtime/config.h"

namespace dtrain {

// A field of Config reached from the whole Config, for reading (`of`) and writing (`in`).
template <class T>
struct ConfigField {
  std::function<T&(Config&)> of;
  std::function<const T&(const Config&)> in;
};

// The values a key accepts. Each kind has its own messages for a value of the wrong
// type or out of range (config.cpp), which name the key and where it was written.
namespace config_kind {

inline constexpr int64_t kNoUpperBound = std::numeric_limits<int64_t>::max();

// An integer in [lo, hi]; `rule`, when set, must also hold ("must be odd").
struct Integer {
  ConfigField<int64_t> field;
  int64_t lo;
  int64_t hi = kNoUpperBound;
  bool (*rule)(int64_t) = nullptr;
  const char* rule_says = nullptr;  // "must be odd (...)", after "key 'a.b' "
};

// An integer >= 0 kept unsigned (the seed).
struct Unsigned {
  ConfigField<uint64_t> field;
};

// An integer >= 1, or `auto` (stored as kAuto, written as `auto`).
struct IntegerOrAuto {
  ConfigField<int64_t> field;
};

// A real number in a range whose ends are each open or closed; NaN is out of range.
struct Real {
  ConfigField<double> field;
  double lo;
  double hi;
  bool lo_open = false;
  bool hi_open = false;
};

struct Boolean {
  ConfigField<bool> field;
};

// Any string; `what` names it in a type error ("a path").
struct Text {
  ConfigField<std::string> field;
  const char* what;
};

// One of `choices`.
struct Choice {
  ConfigField<std::string> field;
  std::vector<std::string> choices;
};

// A list of integers >= 1, written in flow style ([256, 128]).
struct PositiveList {
  ConfigField<std::vector<int64_t>> field;
  bool allow_empty;
};

// Bytes: an integer, or a number with a unit (512MiB); written as bytes.
struct ByteSize {
  ConfigField<int64_t> field;
};

// A non-empty list of byte sizes, none of them 0; written as bytes in flow style.
struct ByteSizeList {
  ConfigField<std::vector<int64_t>> field;
};

}  // namespace config_kind

using ConfigKind = std::variant<config_kind::Integer, config_kind::Unsigned, config_kind::IntegerOrAuto,
                                config_kind::Real, config_kind::Boolean, config_kind::Text, config_kind::Choice,
                                config_kind::PositiveList, config_kind::ByteSize, config_kind::ByteSizeList>;

struct ConfigKey {
  std::string name;  // within its section: "lr" of optimizer.lr
  ConfigKind kind;
  std::string doc;
  // When config_to_yaml writes the key; empty: always. A key left out must be one
  // whose default load_config then restores (see the entries that set it).
  std::function<bool(const Config&)> written_if = nullptr;
};

struct ConfigSection {
  std::string name;  // "optimizer"
  std::vector<ConfigKey> keys;

  std::vector<std::string> key_names() const;
};

// Every section and key of the config, in the order config_to_yaml writes them.
const std::vector<ConfigSection>& config_schema();

}  // namespace dtrain
