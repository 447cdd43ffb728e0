"""The Redis store shared by the chat process (bot/) and the retraining job (training/).

Imports neither of them. Exceptions:

    SettingsError           invalid settings (feedback.settings)
    redis.RedisError        Redis unreachable or failing: callers decide whether to degrade
"""
