// BEPS, "Best Effort Pub/Sub": the paper's end-to-end suite. The client calls the load balancer (a Frontend),
// which forwards each call round robin to one of the workers (also Frontends); a worker aggregates the user DB,
// the payload DB and the read endpoint.
namespace py msdbench.beps

struct User {
  1: string name,
  2: list<string> subscribers,     // who follows this user
  3: list<string> subscriptions,   // whom this user follows
}

struct Message {
  1: i64 id,                       // assigned by the payload DB, unique per payload DB
  2: string user,                  // the publisher
  3: string text,
  4: i64 ts_ns,                    // wall clock (time.time_ns) when the payload DB stored it
}

// What every measured Frontend call returns. server_ns: the time the load balancer spent between entry and
// exit of the call (perf_counter_ns); a worker fills in its own, the load balancer overwrites it.
struct Reply {
  1: i64 server_ns,
  2: optional i64 id,              // publish: the message id
}

struct Census {
  1: i64 users,
  2: i64 messages,
  3: i64 feed_entries,
}

exception UnknownUser {
  1: string name,
}

exception DuplicateUser {
  1: string name,
}

// Subscribing to oneself, subscribing twice, unsubscribing without a subscription, an empty name.
exception InvalidRequest {
  1: string why,
}

service UserDB {
  void create_user(1: string name) throws (1: DuplicateUser duplicate, 2: InvalidRequest invalid),
  // Also removes the user from the subscriber and subscription sets of every other user.
  void delete_user(1: string name) throws (1: UnknownUser unknown),
  User get_user(1: string name) throws (1: UnknownUser unknown),
  void subscribe(1: string follower, 2: string followee)
    throws (1: UnknownUser unknown, 2: InvalidRequest invalid),
  void unsubscribe(1: string follower, 2: string followee)
    throws (1: UnknownUser unknown, 2: InvalidRequest invalid),
  i64 census(),                    // users held
}

service PayloadDB {
  Message store(1: string user, 2: string text),
  list<Message> list_messages(1: string user),
  i64 drop_user(1: string user),   // returns how many messages were dropped
  i64 census(),                    // messages held
}

service ReadEndpoint {
  void update_feed(1: string user, 2: Message msg),
  list<Message> get_feed(1: string user),   // empty for a user without a feed
  void drop_feed(1: string user),
  i64 census(),                    // feed entries held, over all feeds
}

// Implemented by both the worker and the load balancer.
service Frontend {
  // The five measured request types.
  Reply create_user(1: string name) throws (1: DuplicateUser duplicate, 2: InvalidRequest invalid),
  Reply delete_user(1: string name) throws (1: UnknownUser unknown),
  Reply subscribe(1: string follower, 2: string followee)
    throws (1: UnknownUser unknown, 2: InvalidRequest invalid),
  Reply unsubscribe(1: string follower, 2: string followee)
    throws (1: UnknownUser unknown, 2: InvalidRequest invalid),
  Reply publish(1: string user, 2: string text) throws (1: UnknownUser unknown),
  // Unmeasured helpers for the client's correctness check.
  list<Message> get_feed(1: string user),
  Census census(),
}
