"""The languages users read: English, and Chinese (many write their prompts in Chinese)."""

EN, ZH = "en", "zh"
