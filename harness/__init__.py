"""What the tests and the benchmarks stand up and wait for: one module per job.

waiting (the one poller), network (free ports, a TCP relay), processes (the service's processes),
servers (throwaway PostgreSQL databases and RabbitMQ vhosts), receivers (SMTP, HTTP push and raw
protocol servers), factories (rows and envelopes), payloads (API request bodies), faults (the figures
of a fault-injection run), prometheus (reading the text format), browser (headless Chromium),
push_services (local Web Push, FCM and APNs services that check what the real ones check), cluster
(a local 3-node RabbitMQ cluster of its own).
"""
