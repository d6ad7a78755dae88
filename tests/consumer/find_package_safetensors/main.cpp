// A program outside emb's tree that uses the installed package's safetensors component: it
// links emb::safetensors and includes <emb/io/safetensors.hpp> (which brings nlohmann/json).
#include <cstdio>
#include <emb/io/safetensors.hpp>
#include <filesystem>
#include <iostream>

int main() {
  const auto path =
      (std::filesystem::temp_directory_path() / "emb_consumer_find_package.safetensors").string();
  emb::Matrix<float> w(2, 3);
  w << 1, 2, 3, 4, 5, 6;
  emb::io::save_safetensors<float>(path, {{"weight", w}}, {{"format", "pt"}});
  const auto st = emb::io::SafeTensors::open(path);
  const bool ok = st.names().size() == 1 && st.metadata().at("format") == "pt" &&
                  st.load<float>("weight") == w && st.map<float>("weight").view() == w;
  std::remove(path.c_str());
  if (!ok) {
    std::cerr << "unexpected safetensors round trip\n";
    return 1;
  }
  std::cout << "consumer ok\n";
  return 0;
}
