// Reads the reference files a Python script wrote by hand with PyTorch (e.g.
// tests/data/quant/make_reference.py): blocks that start with "case NAME", then one line per
// field, "key type values...". Types: str (one word), int (one integer), i64 (integers),
// f32 (8-digit hex bit patterns, so values are exact), u16 (4-digit hex), u8 (one hex string,
// two digits a byte). Lines starting with '#' are comments.
#pragma once

#include <emb/index_span.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace emb_test {

class ReferenceCase {
 public:
  explicit ReferenceCase(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }

  void add(const std::string& key, std::string type, std::vector<std::string> values) {
    fields_[key] = {std::move(type), std::move(values)};
  }
  bool has(const std::string& key) const { return fields_.count(key) != 0; }

  std::string str(const std::string& key) const { return one(key, "str"); }
  emb::Index integer(const std::string& key) const { return std::stoll(one(key, "int")); }
  std::vector<emb::Index> i64(const std::string& key) const {
    std::vector<emb::Index> out;
    for (const auto& v : values(key, "i64")) out.push_back(std::stoll(v));
    return out;
  }
  std::vector<float> f32(const std::string& key) const {
    std::vector<float> out;
    for (const auto& v : values(key, "f32")) {
      const auto bits = static_cast<std::uint32_t>(std::stoul(v, nullptr, 16));
      float f;
      std::memcpy(&f, &bits, sizeof f);
      out.push_back(f);
    }
    return out;
  }
  // An f32 field as a (rows, cols) row-major matrix.
  emb::Matrix<float> f32_matrix(const std::string& key, emb::Index rows, emb::Index cols) const {
    const std::vector<float> v = f32(key);
    REQUIRE_MESSAGE(static_cast<emb::Index>(v.size()) == rows * cols,
                    name_ << "." << key << " holds " << v.size() << " values, not " << rows << " x " << cols);
    emb::Matrix<float> m(rows, cols);
    std::copy(v.begin(), v.end(), m.data());
    return m;
  }
  std::vector<std::uint16_t> u16(const std::string& key) const {
    std::vector<std::uint16_t> out;
    for (const auto& v : values(key, "u16")) {
      out.push_back(static_cast<std::uint16_t>(std::stoul(v, nullptr, 16)));
    }
    return out;
  }
  std::vector<std::uint8_t> u8(const std::string& key) const {
    const std::string& hex = one(key, "u8");
    REQUIRE(hex.size() % 2 == 0);
    std::vector<std::uint8_t> out(hex.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<std::uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
    }
    return out;
  }

 private:
  const std::vector<std::string>& values(const std::string& key, const char* type) const {
    const auto it = fields_.find(key);
    REQUIRE_MESSAGE(it != fields_.end(), name_ << " has no field " << key);
    REQUIRE_MESSAGE(it->second.first == type, name_ << "." << key << " is not " << type);
    return it->second.second;
  }
  const std::string& one(const std::string& key, const char* type) const {
    const auto& v = values(key, type);
    REQUIRE_MESSAGE(v.size() == 1, name_ << "." << key << " holds " << v.size() << " values");
    return v.front();
  }

  std::string name_;
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> fields_;
};

class ReferenceFile {
 public:
  explicit ReferenceFile(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream words(line);
      std::string key, type;
      words >> key >> type;
      if (key == "case") {
        cases_.emplace_back(type);
        continue;
      }
      REQUIRE_MESSAGE(!cases_.empty(), path << ": a field before the first case");
      std::vector<std::string> values;
      for (std::string v; words >> v;) values.push_back(v);
      cases_.back().add(key, type, std::move(values));
    }
    REQUIRE_MESSAGE(!cases_.empty(), path << " holds no cases");
  }

  const ReferenceCase& at(const std::string& name) const {
    for (const auto& c : cases_) {
      if (c.name() == name) return c;
    }
    FAIL("no case " << name);
    return cases_.front();
  }
  // Every case whose name starts with `prefix`, in file order.
  std::vector<const ReferenceCase*> with_prefix(const std::string& prefix) const {
    std::vector<const ReferenceCase*> out;
    for (const auto& c : cases_) {
      if (c.name().rfind(prefix, 0) == 0) out.push_back(&c);
    }
    return out;
  }

 private:
  std::vector<ReferenceCase> cases_;
};

}  // namespace emb_test
