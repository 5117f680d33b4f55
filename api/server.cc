// The Beast server behind server.h: one strand per connection on a small pool of I/O threads,
// parser limits for body and headers, a deadline on every read and write, TLS through Asio's
// OpenSSL stream, and a drain that closes idle connections and lets busy ones finish.
#include "api/server.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <list>
#include <mutex>
#include <thread>

#include "metrics/metrics.h"

namespace stampmover::api {

namespace {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

class SessionBase;

struct Shared {
  Shared(Router& r, ServerOptions o) : router(r), opts(std::move(o)) {}
  Router& router;
  ServerOptions opts;
  std::atomic<uint32_t> connections{0};
  std::atomic<bool> draining{false};
  std::mutex mu;
  std::list<std::weak_ptr<SessionBase>> sessions;  // guarded by mu; pruned on accept
};

class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  virtual void start() = 0;
  // Closes the connection if it waits for a request; a busy one closes after its response.
  virtual void drain() = 0;
};

bool isHttpParseError(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

template <class Stream>
class Session final : public SessionBase {
 public:
  template <class... Args>
  Session(std::shared_ptr<Shared> sh, Args&&... args)
      : stream_(std::forward<Args>(args)...), sh_(std::move(sh)) {
    sh_->connections.fetch_add(1);
    if (auto* m = sh_->router.metrics()) m->addHttpConnections(1);
  }
  ~Session() override {
    sh_->connections.fetch_sub(1);
    if (auto* m = sh_->router.metrics()) m->addHttpConnections(-1);
  }

  void start() override {
    asio::dispatch(stream_.get_executor(), [self = self()] { self->onStart(); });
  }

  void drain() override {
    asio::post(stream_.get_executor(), [self = self()] {
      if (!self->busy_) lowest(self->stream_).cancel();
    });
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  static beast::tcp_stream& lowest(Stream& s) { return beast::get_lowest_layer(s); }
  std::shared_ptr<Session> self() { return std::static_pointer_cast<Session>(shared_from_this()); }

  void onStart() {
    if constexpr (kTls) {
      lowest(stream_).expires_after(sh_->opts.request_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = self()](beast::error_code ec) {
                                if (ec) {
                                  spdlog::debug("api: TLS handshake failed: {}", ec.message());
                                  return;  // the socket closes with the session
                                }
                                self->doRead();
                              });
    } else {
      doRead();
    }
  }

  void doRead() {
    busy_ = false;
    if (sh_->draining.load()) return doClose();
    parser_.emplace();
    parser_->header_limit(sh_->opts.max_header_bytes);
    parser_->body_limit(sh_->opts.max_body_bytes);
    lowest(stream_).expires_after(sh_->opts.request_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = self()](beast::error_code ec, size_t) { self->onRead(ec); });
  }

  void onRead(beast::error_code ec) {
    started_ = std::chrono::steady_clock::now();
    if (ec == http::error::body_limit) {
      return respondAndClose(errorResponse(
          413, "payload_too_large",
          "request body larger than " + std::to_string(sh_->opts.max_body_bytes) + " bytes"));
    }
    if (ec == http::error::header_limit) {
      return respondAndClose(errorResponse(
          431, "headers_too_large",
          "request headers larger than " + std::to_string(sh_->opts.max_header_bytes) + " bytes"));
    }
    if (ec && isHttpParseError(ec) && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      return respondAndClose(errorResponse(400, "bad_request", "malformed HTTP request: " + ec.message()));
    }
    if (ec) return doClose();  // eof, timeout, reset, drain: nothing to answer

    busy_ = true;
    auto& req = parser_->get();
    HttpRequest in;
    in.method = std::string(req.method_string());
    in.target = std::string(req.target());
    if (auto it = req.find(http::field::authorization); it != req.end()) {
      in.authorization = std::string(it->value());
    }
    if (auto it = req.find(http::field::content_type); it != req.end()) {
      in.content_type = std::string(it->value());
    }
    in.body = std::move(req.body());
    HttpResponse out = sh_->router.handle(in);
    const bool keep = req.keep_alive() && !sh_->draining.load();
    spdlog::debug("api: {} {} -> {}", in.method, in.target.substr(0, in.target.find('?')), out.status);
    write(std::move(out), in.method, keep);
  }

  void respondAndClose(HttpResponse out) {
    busy_ = true;
    write(std::move(out), "-", false);
  }

  void write(HttpResponse out, const std::string& method, bool keep_alive) {
    if (auto* m = sh_->router.metrics()) {
      m->observeHttpRequest(
          out.route, method, out.status,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    }
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(out.status));
    res_.set(http::field::server, "stampmover");
    res_.set(http::field::content_type, out.content_type);
    res_.set(http::field::cache_control, "no-store");
    for (auto& [k, v] : out.headers) res_.set(k, v);
    res_.body() = std::move(out.body);
    res_.keep_alive(keep_alive);
    res_.prepare_payload();
    lowest(stream_).expires_after(sh_->opts.request_timeout);
    http::async_write(stream_, res_, [self = self(), keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->doClose();
      self->doRead();
    });
  }

  void doClose() {
    if (closed_) return;
    closed_ = true;
    if constexpr (kTls) {
      lowest(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = self()](beast::error_code) {
        beast::error_code ignored;  // the peer may be gone already: nothing to report
        lowest(self->stream_).socket().close(ignored);
      });
    } else {
      beast::error_code ignored;  // as above
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  Stream stream_;
  std::shared_ptr<Shared> sh_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  bool busy_ = false;
  bool closed_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace

struct Server::Impl {
  std::optional<ssl::context> tls;  // declared before the io_context: sessions use it
  asio::io_context ioc;
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  std::shared_ptr<Shared> shared;
  std::vector<std::thread> threads;
  uint16_t port = 0;
  bool stopped = false;

  void doAccept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket sock) {
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
        spdlog::warn("api: accept failed: {}", ec.message());
        return doAccept();
      }
      if (shared->draining.load()) return;  // the socket closes here
      if (shared->connections.load() >= shared->opts.max_connections) {
        spdlog::warn("api: connection limit ({}) reached; closing a new connection",
                     shared->opts.max_connections);
        return doAccept();
      }
      std::shared_ptr<SessionBase> s;
      if (tls) {
        s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(shared, std::move(sock), *tls);
      } else {
        s = std::make_shared<Session<beast::tcp_stream>>(shared, std::move(sock));
      }
      {
        std::lock_guard<std::mutex> lk(shared->mu);
        shared->sessions.remove_if([](const auto& w) { return w.expired(); });
        shared->sessions.push_back(s);
      }
      s->start();
      doAccept();
    });
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    ioc.stop();
    for (auto& t : threads) t.join();
    threads.clear();
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { impl_->stop(); }

common::Result<std::unique_ptr<Server>> Server::start(const ServerOptions& options, Router& router) {
  auto impl = std::make_unique<Impl>();
  impl->shared = std::make_shared<Shared>(router, options);
  beast::error_code ec;
  std::string host = options.listen_address == "localhost" ? "127.0.0.1" : options.listen_address;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    return common::Status::refused("listen address '" + options.listen_address +
                                   "' is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::)");
  }
  const bool want_tls = !options.tls_cert_file.empty() || !options.tls_key_file.empty();
  if (want_tls && (options.tls_cert_file.empty() || options.tls_key_file.empty())) {
    return common::Status::refused("TLS needs both a certificate and a key (--tls-cert, --tls-key)");
  }
  if (!want_tls && !addr.is_loopback() && !options.insecure_plaintext) {
    return common::Status::refused(
        "refusing to listen on " + options.listen_address +
        " without TLS: bearer tokens would cross the network in clear. Configure --tls-cert and "
        "--tls-key, listen on 127.0.0.1, or pass --insecure-plaintext (e.g. behind a TLS proxy "
        "on the same host)");
  }
  if (options.threads == 0 || options.max_connections == 0) {
    return common::Status::refused("serve: threads and max connections must be at least 1");
  }
  if (want_tls) {
    try {
      impl->tls.emplace(ssl::context::tls_server);
      impl->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                             ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                             ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
      impl->tls->use_certificate_chain_file(options.tls_cert_file);
      impl->tls->use_private_key_file(options.tls_key_file, ssl::context::pem);
      if (SSL_CTX_check_private_key(impl->tls->native_handle()) != 1) {
        return common::Status::refused("TLS key " + options.tls_key_file +
                                       " does not match certificate " + options.tls_cert_file);
      }
    } catch (const boost::system::system_error& e) {
      return common::Status::refused("TLS certificate " + options.tls_cert_file + " / key " +
                                     options.tls_key_file + ": " + e.code().message() +
                                     " (PEM files readable by this user?)");
    }
  }
  tcp::endpoint ep(addr, options.port);
  const std::string where = options.listen_address + ":" + std::to_string(options.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return common::Status::refused("cannot listen on " + where + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint().port();
  impl->doAccept();
  for (uint32_t i = 0; i < options.threads; ++i) {
    impl->threads.emplace_back([io = &impl->ioc] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          // A handler threw past the router's guard: keep serving, say so.
          spdlog::error("api: I/O thread: {}", e.what());
        }
      }
    });
  }
  spdlog::info("api: listening on {}:{} ({})", options.listen_address, impl->port,
               want_tls ? "TLS" : "plaintext");
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

uint16_t Server::port() const { return impl_->port; }
bool Server::tls() const { return impl_->tls.has_value(); }
uint32_t Server::openConnections() const { return impl_->shared->connections.load(); }

void Server::beginDrain() {
  if (impl_->shared->draining.exchange(true)) return;
  impl_->shared->router.setDraining();
  asio::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    beast::error_code ignored;  // closing twice or after an error is harmless
    impl->acceptor.close(ignored);
  });
  std::lock_guard<std::mutex> lk(impl_->shared->mu);
  for (auto& w : impl_->shared->sessions) {
    if (auto s = w.lock()) s->drain();
  }
}

bool Server::waitDrained(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (impl_->shared->connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool done = impl_->shared->connections.load() == 0;
  impl_->stop();
  return done;
}

}  // namespace stampmover::api
