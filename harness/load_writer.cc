// Concurrent writer: see writer.h. Statements are parameterised; each transaction touches
// one or a few rows so that many small source transactions reach the stream.
#include "harness/load_writer.h"

#include <random>

#include "common/pg.h"

namespace stampmover::harness {

void createScratchTable(const std::string& dsn) {
  auto c = common::PgConnection::connect(dsn, "writer");
  if (!c) return;
  c->exec("CREATE TABLE IF NOT EXISTS scratch (tenant_id bigint NOT NULL, id bigint NOT NULL, "
          "v text, PRIMARY KEY (tenant_id, id))")
      .ignore();  // fixture: a failure shows up as a data mismatch in the test
}

Writer::Writer(WriterOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { run(); });
}

Writer::~Writer() { stop(); }

void Writer::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void Writer::run() {
  auto conn = common::PgConnection::connect(options_.dsn, "writer");
  if (!conn) {
    errors_++;
    return;
  }
  std::mt19937_64 rng(options_.seed);
  auto deadline = std::chrono::steady_clock::now() + options_.duration;
  uint64_t next_id = 10'000'000 + static_cast<uint64_t>(options_.seed) * 1'000'000;
  while (!stop_.load() && std::chrono::steady_clock::now() < deadline &&
         txns_.load() < options_.max_transactions) {
    const int64_t tenant = (rng() % 4 == 0) ? options_.other_tenant : options_.tenant;
    const std::string t = std::to_string(tenant);
    const std::string id = std::to_string(next_id++);
    const std::string pick = std::to_string(1 + rng() % 2000);
    common::Status st;
    switch (rng() % 12) {
      case 0:
      case 1:  // new account + order + items in one transaction
        st = conn->exec("BEGIN");
        if (st.isOk()) st = conn->query("INSERT INTO accounts (tenant_id, account_id, name, created_at, profile) "
                                        "VALUES ($1, $2, 'w' || $2, now(), '{\"w\":1}')", {t, id}).status();
        if (st.isOk()) st = conn->query("INSERT INTO orders (tenant_id, order_id, account_id, status, total) "
                                        "VALUES ($1, $2, $2, 'new', 1.5)", {t, id}).status();
        if (st.isOk()) st = conn->query("INSERT INTO order_items (tenant_id, order_id, line, sku, qty, price) "
                                        "SELECT $1, $2, g, 'W', g, 2.5 FROM generate_series(1, 3) g", {t, id}).status();
        st = conn->exec(st.isOk() ? "COMMIT" : "ROLLBACK");
        break;
      case 2:
      case 3:  // plain update
        st = conn->query("UPDATE orders SET status = 'paid', total = total + 1 WHERE tenant_id = $1 "
                         "AND order_id = $2", {t, pick}).status();
        break;
      case 4:  // update of a TOASTed row leaving the big body unchanged
        st = conn->query("UPDATE documents SET title = 'retitled ' || now() WHERE tenant_id = $1 "
                         "AND doc_key IN (SELECT doc_key FROM documents WHERE tenant_id = $1 "
                         "AND length(body) > 2000 ORDER BY doc_key LIMIT 1 OFFSET $2)",
                         {t, std::to_string(rng() % 20)}).status();
        break;
      case 5:  // primary-key change
        st = conn->query("UPDATE events SET event_id = gen_random_uuid() WHERE tenant_id = $1 AND "
                         "event_id = (SELECT event_id FROM events WHERE tenant_id = $1 ORDER BY "
                         "event_id LIMIT 1 OFFSET $2)", {t, std::to_string(rng() % 100)}).status();
        break;
      case 6:  // delete (children first, FK)
        st = conn->exec("BEGIN");
        if (st.isOk()) st = conn->query("DELETE FROM order_items WHERE tenant_id = $1 AND order_id = $2", {t, pick}).status();
        if (st.isOk()) st = conn->query("DELETE FROM orders WHERE tenant_id = $1 AND order_id = $2", {t, pick}).status();
        st = conn->exec(st.isOk() ? "COMMIT" : "ROLLBACK");
        break;
      case 7:  // delete of a row that may not exist anymore
        st = conn->query("DELETE FROM events WHERE tenant_id = $1 AND event_id = md5($1 || '/' || $2)::uuid",
                         {t, pick}).status();
        break;
      case 8:
      case 9:
        st = conn->query("INSERT INTO scratch VALUES ($1, $2, repeat('s', 10)) ON CONFLICT DO NOTHING",
                         {t, std::to_string(rng() % 500)}).status();
        break;
      case 10:
        if (options_.truncates && rng() % 8 == 0) {
          st = conn->exec("TRUNCATE scratch");
        } else {
          st = conn->query("UPDATE scratch SET v = v || 'x' WHERE tenant_id = $1", {t}).status();
        }
        break;
      case 11:  // a multi-statement transaction mixing tenants
        st = conn->exec("BEGIN");
        if (st.isOk()) st = conn->query("UPDATE accounts SET balance = coalesce(balance, 0) + 1 WHERE tenant_id = $1 "
                                        "AND account_id = $2", {t, pick}).status();
        if (st.isOk()) st = conn->query("UPDATE accounts SET balance = coalesce(balance, 0) + 1 WHERE tenant_id = $1 "
                                        "AND account_id = $2", {std::to_string(options_.other_tenant), pick}).status();
        st = conn->exec(st.isOk() ? "COMMIT" : "ROLLBACK");
        break;
    }
    if (st.isOk()) {
      txns_++;
    } else {
      errors_++;
      if (!st.isOk() && st.errorClass() == common::ErrorClass::kRetryable) {
        // Server restarting under us (restart tests): reconnect and go on.
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        auto again = common::PgConnection::connect(options_.dsn, "writer");
        if (again) conn = std::move(again);
      }
    }
    if (options_.pause.count() > 0) std::this_thread::sleep_for(options_.pause);
  }
}

}  // namespace stampmover::harness
