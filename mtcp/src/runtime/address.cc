#include "runtime/address.h"

#include <charconv>

namespace mtcp::rt {

bool parse_endpoint(const std::string& text, asio::ip::tcp::endpoint& out, std::string& why) {
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      why = "expected [IPv6]:port in '" + text + "'";
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      why = "expected host:port (IPv6 in brackets) in '" + text + "'";
      return false;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    why = "bad port '" + port + "' in '" + text + "'";
    return false;
  }
  asio::error_code aec;
  auto addr = asio::ip::make_address(host, aec);
  if (aec) {
    why = "'" + host + "' is not a numeric IPv4 or IPv6 address";
    return false;
  }
  out = asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(value));
  return true;
}

std::string to_string(const asio::ip::tcp::endpoint& ep) {
  if (ep.address().is_v6()) return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace mtcp::rt
