// The API client (see client.h): Beast over a plain or TLS stream, run as one chain of async
// operations on a private io_context so a single deadline covers connect, handshake, write and
// read.
#include "api/client.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>
#include <memory>

namespace stampmover::api {

namespace {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
};

common::Result<Url> parseUrl(const std::string& url) {
  Url u;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return common::Status::refused("--api '" + url + "': expected https://host:port or http://host:port");
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) {
    return common::Status::refused("--api '" + url + "': give the server only, without a path");
  }
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    auto close = rest.find(']');
    if (close == std::string::npos) return common::Status::refused("--api '" + url + "': bad IPv6 address");
    u.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') u.port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    u.host = rest.substr(0, colon);
    if (colon != std::string::npos) u.port = rest.substr(colon + 1);
  }
  if (u.host.empty()) return common::Status::refused("--api '" + url + "': no host");
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  return u;
}

// One request in flight: owns the stream and buffers the async chain uses.
template <class Stream>
struct Exchange : std::enable_shared_from_this<Exchange<Stream>> {
  template <class... Args>
  explicit Exchange(Args&&... args) : stream(std::forward<Args>(args)...) {}
  Stream stream;
  tcp::resolver::results_type endpoints;
  http::request<http::string_body> req;
  http::response_parser<http::string_body> parser;
  beast::flat_buffer buffer;
  beast::error_code error;
  std::string stage = "connect";

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream); }

  void run(std::chrono::milliseconds timeout) {
    auto self = this->shared_from_this();
    parser.body_limit(64ull << 20);
    lowest().expires_after(timeout);
    lowest().async_connect(endpoints, [self](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return self->fail(ec);
      if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
        self->stage = "TLS handshake";
        self->stream.async_handshake(ssl::stream_base::client, [self](beast::error_code ec2) {
          if (ec2) return self->fail(ec2);
          self->send();
        });
      } else {
        self->send();
      }
    });
  }
  void send() {
    auto self = this->shared_from_this();
    stage = "send";
    http::async_write(stream, req, [self](beast::error_code ec, size_t) {
      if (ec) return self->fail(ec);
      self->stage = "read the answer";
      http::async_read(self->stream, self->buffer, self->parser,
                       [self](beast::error_code ec2, size_t) {
                         if (ec2) return self->fail(ec2);
                         // The answer is complete; closing is best effort and not awaited.
                         beast::error_code ignored;
                         self->lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
                       });
    });
  }
  void fail(beast::error_code ec) { error = ec; }
};

}  // namespace

common::Result<ClientResponse> httpRequest(const ClientOptions& options, const std::string& method,
                                           const std::string& path, const std::string& body) {
  SM_ASSIGN_OR_RETURN(Url url, parseUrl(options.base_url));
  asio::io_context ioc;
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  auto endpoints = resolver.resolve(url.host, url.port, ec);
  if (ec) {
    return common::Status::retryable("cannot resolve API host '" + url.host + "': " + ec.message());
  }
  http::request<http::string_body> req{http::string_to_verb(method), path, 11};
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "stampmover-cli");
  req.set(http::field::accept, "application/json");
  if (!options.token.empty()) req.set(http::field::authorization, "Bearer " + options.token);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(false);
  req.prepare_payload();

  const std::string where = options.base_url + path;
  auto finish = [&](auto& ex) -> common::Result<ClientResponse> {
    ex->endpoints = endpoints;
    ex->req = std::move(req);
    ex->run(options.timeout);
    ioc.run();
    if (ex->error) {
      const auto& e = ex->error;
      if (e.category() == asio::error::get_ssl_category() ||
          e.category() == asio::ssl::error::get_stream_category()) {
        return common::Status::refused("TLS with " + options.base_url + " failed (" + e.message() +
                                       "): pass the server's CA with --ca-file, and use the host "
                                       "name its certificate names");
      }
      return common::Status::retryable("API " + options.base_url + ": " + ex->stage + " failed: " +
                                       (e == beast::error::timeout ? std::string("timed out") : e.message()));
    }
    auto& res = ex->parser.get();
    return ClientResponse{static_cast<int>(res.result_int()), res.body()};
  };

  if (url.tls) {
    ssl::context ctx(ssl::context::tls_client);
    try {
      if (!options.ca_file.empty()) {
        ctx.load_verify_file(options.ca_file);
      } else {
        ctx.set_default_verify_paths();
      }
    } catch (const boost::system::system_error& e) {
      return common::Status::refused("--ca-file " + options.ca_file + ": " + e.code().message());
    }
    ctx.set_verify_mode(ssl::verify_peer);
    auto ex = std::make_shared<Exchange<beast::ssl_stream<beast::tcp_stream>>>(ioc, ctx);
    // SNI and the host name the certificate must name (IP addresses are matched as such).
    SSL* ssl_handle = ex->stream.native_handle();
    beast::error_code addr_ec;
    auto ip = asio::ip::make_address(url.host, addr_ec);
    if (addr_ec) {
      SSL_set_tlsext_host_name(ssl_handle, url.host.c_str());
      SSL_set1_host(ssl_handle, url.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_handle), url.host.c_str());
    }
    (void)ip;
    return finish(ex);
  }
  auto ex = std::make_shared<Exchange<beast::tcp_stream>>(ioc);
  return finish(ex);
}

}  // namespace stampmover::api
