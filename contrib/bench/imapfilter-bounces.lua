-- imapfilter rules for the comparison in benches/sweep.rs: a typical header-only
-- bounce filter, moving every message that looks like a bounce (by From or Subject,
-- decided by server-side SEARCH; no message is downloaded) to FilterQuarantine.
--
-- It cannot tell backscatter from a genuine bounce: both are moved. That is the
-- point of the comparison (speed of a header-search move, not accuracy).
--
-- Run by the benchmark as
--   imapfilter -c contrib/bench/imapfilter-bounces.lua -t CA.pem
-- with the connection taken from the environment:
--   BENCH_IMAP_HOST, BENCH_IMAP_PORT (implicit TLS), BENCH_IMAP_USER, BENCH_IMAP_PASSWORD
-- `-t` makes imapfilter verify the server certificate against that CA file;
-- `certificates = false` keeps it from storing (or asking about) an unverified one.

options.timeout = 120
options.certificates = false
options.hostnames = true
options.create = true
options.info = false

local function env(name)
  local value = os.getenv(name)
  if value == nil or value == '' then
    error('environment variable ' .. name .. ' is not set')
  end
  return value
end

local account = IMAP {
  server = env('BENCH_IMAP_HOST'),
  port = tonumber(env('BENCH_IMAP_PORT')),
  username = env('BENCH_IMAP_USER'),
  password = env('BENCH_IMAP_PASSWORD'),
  ssl = 'auto',
}

local inbox = account.INBOX

-- One UID SEARCH per rule; `+` is the union of the results (done by imapfilter).
local bounces = inbox:contain_from('MAILER-DAEMON')
  + inbox:contain_from('postmaster@')
  + inbox:contain_subject('Undelivered Mail Returned to Sender')
  + inbox:contain_subject('Mail delivery failed')
  + inbox:contain_subject('failure notice')
  + inbox:contain_subject('Delivery Status Notification')
  + inbox:contain_subject('Returned mail:')

print('imapfilter: ' .. #bounces .. ' messages matched the bounce rules')
bounces:move_messages(account.FilterQuarantine)
