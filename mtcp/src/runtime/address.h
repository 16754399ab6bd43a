// "host:port" addresses: IPv4 ("127.0.0.1:7001") or IPv6 in brackets ("[::1]:7001").
// Numeric only: the runtime never resolves names (no DNS inside test namespaces).
#pragma once
#include <asio/ip/tcp.hpp>
#include <string>

#include "common/result.h"

namespace mtcp::rt {

// Parses an address; on failure `why` says what is wrong.
bool parse_endpoint(const std::string& text, asio::ip::tcp::endpoint& out, std::string& why);
std::string to_string(const asio::ip::tcp::endpoint& ep);

}  // namespace mtcp::rt
