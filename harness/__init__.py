"""What the tests and the benchmarks stand up and wait for: one module per job.

push_services (local Web Push, FCM and APNs services that check what the real ones check).
"""
