"""What users read in chats: greetings, help, progress notes, captions, buttons, quota,
settings, the command menu."""

from __future__ import annotations

from bot.texts.languages import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
    "start": {
        EN: "Hi {name}! Send me a photo with a caption saying what to change, and I'll send "
        "back the edited photo in a few seconds.\n\nReply to a result to refine it further. "
        "/help shows examples.",
        ZH: "你好 {name}！发一张照片并在说明里写上要怎么改，几秒钟后我会发回修改后的照片。"
        "\n\n回复结果图可以继续修改。/help 查看示例。",
    },
    "help_telegram": {
        EN: "How to use me:\n"
        "• Send a photo with a caption, e.g. \u201cmake it night time with neon lights\u201d.\n"
        "• Speech bubbles and signs: put the words in quotes, e.g. \u201cmake the cat lie on "
        'its back, with a speech bubble saying "I was wrong"\u201d.\n'
        "• Reply to any result (or any photo) with more instructions to refine it.\n"
        "• Send a photo without a caption and I'll ask what to change.\n"
        "• In groups: use /edit <what to change> on a photo, mention me, or reply to my result.\n\n"
        "Buttons: 🎲 Reroll (same prompt, new seed) · ↩️ Undo (back one step) · "
        "🖼 Full quality (lossless file).\n\n"
        "Commands: /quota · /seed [number|random] · /settings · /cancel",
        ZH: "使用方法：\n"
        "• 发送照片并写上说明，例如「把场景改成夜晚，加上霓虹灯」。\n"
        "• 对话气泡和招牌：把文字放进引号里，例如「让图中猫躺在地上露出肚皮，"
        "旁边有个对话气泡框写着\u201c我错了\u201d」。\n"
        "• 回复任意结果图（或任意照片）并写上新的要求，就能继续修改。\n"
        "• 只发照片不写说明，我会问你要怎么改。\n"
        "• 群组里：在照片上用 /edit <要求>、@我，或回复我的结果图。\n\n"
        "按钮：🎲 重新生成（同样的要求，新的种子）· ↩️ 撤销（回到上一步）· "
        "🖼 原图（无损文件）。\n\n"
        "命令：/quota · /seed [数字|random] · /settings · /cancel",
    },
    "help_discord": {
        EN: "How to use me:\n"
        "• Send an image and mention me with what to change, e.g. \u201c@stepedit make it night "
        "time with neon lights\u201d (in DMs no mention is needed).\n"
        "• Or use `/edit` with an image and a prompt, or right-click a message with an image "
        "→ Apps → **Edit image**.\n"
        "• Speech bubbles and signs: put the words in quotes, e.g. \u201cwith a speech bubble "
        'saying "I was wrong"\u201d.\n'
        "• Reply to any result with more instructions to refine it; reply to someone's image "
        "and mention me to edit theirs.\n\n"
        "Buttons: 🎲 Reroll (same prompt, new seed) · ↩️ Undo (back one step) · "
        "🖼 Full quality (lossless file).\n\n"
        "Commands: /quota · /seed · /settings · /cancel · /help",
        ZH: "使用方法：\n"
        "• 发送图片并 @我 写上要怎么改，例如「@stepedit 把场景改成夜晚，加上霓虹灯」"
        "（私信里不用 @）。\n"
        "• 也可以用 `/edit` 附上图片和要求，或右键带图片的消息 → 应用 → **Edit image**。\n"
        "• 对话气泡和招牌：把文字放进引号里，例如「旁边有个对话气泡框写着\u201c我错了\u201d」。\n"
        "• 回复任意结果图并写上新的要求，就能继续修改；回复别人的图片并 @我，可以修改他的图。\n\n"
        "按钮：🎲 重新生成（同样的要求，新的种子）· ↩️ 撤销（回到上一步）· "
        "🖼 原图（无损文件）。\n\n"
        "命令：/quota · /seed · /settings · /cancel · /help",
    },
    "ask_prompt": {
        EN: "Got it! What should I change in this photo? Just reply with a description.",
        ZH: "收到！这张照片要怎么改？直接回复描述即可。",
    },
    "working": {EN: "🎨 Editing…", ZH: "🎨 正在修改…"},
    "working_sent": {
        EN: "🎨 Editing… (the image model has it: it can no longer be cancelled)",
        ZH: "🎨 正在修改…（图像模型已在处理，无法再取消）",
    },
    "queued": {
        EN: "⏳ Queued: you're number {position} in line.",
        ZH: "⏳ 排队中：你排在第 {position} 位。",
    },
    "working_more": {
        EN: "🎨 Editing… ({count} more of yours queued)",
        ZH: "🎨 正在修改…（你还有 {count} 个在排队）",
    },
    "queued_many": {
        EN: "⏳ Queued: {count} of yours, the next is number {position} in line.",
        ZH: "⏳ 排队中：你有 {count} 个修改，下一个排在第 {position} 位。",
    },
    "caption": {EN: "{prompt}\n\nseed {seed}", ZH: "{prompt}\n\n种子 {seed}"},
    "caption_original": {EN: "The original photo.", ZH: "原始照片。"},
    "caption_stand_in": {
        EN: "Made by {model}: the usual model is unavailable right now.",
        ZH: "由 {model} 生成：常用模型暂时不可用。",
    },
    "caption_full_plain": {EN: "Full quality, lossless PNG.", ZH: "原图，无损 PNG。"},
    "caption_full": {
        EN: "Full quality, lossless PNG (seed {seed}).",
        ZH: "原图，无损 PNG（种子 {seed}）。",
    },
    "caption_full_jpeg_plain": {
        EN: "Full quality: the original JPEG, not re-encoded (JPEG is not lossless).",
        ZH: "原图：原始 JPEG 文件，未经再次压缩（JPEG 并非无损）。",
    },
    "caption_full_jpeg": {
        EN: "Full quality: the original JPEG, not re-encoded (JPEG is not lossless; seed {seed}).",
        ZH: "原图：原始 JPEG 文件，未经再次压缩（JPEG 并非无损；种子 {seed}）。",
    },
    "note_first_frame": {
        EN: "Note: your image was animated; I edited its first frame.",
        ZH: "提示：你的图片是动图，我修改的是第一帧。",
    },
    "note_left_out": {
        EN: "Note: I could not edit every picture; those I could not edit cost nothing.",
        ZH: "提示：有些图片没能修改；没修改的不收费。",
    },
    "note_downscaled": {
        EN: "Note: your image was larger than the service accepts, so I scaled it down.",
        ZH: "提示：图片超过服务允许的尺寸，已按比例缩小。",
    },
    "command_edit": {EN: "Edit a photo: /edit <what to change>", ZH: "修改照片：/edit <要求>"},
    "command_help": {EN: "How to use the bot, with examples", ZH: "使用说明和示例"},
    "command_quota": {EN: "Edits left today", ZH: "今日剩余次数"},
    "command_seed": {EN: "Fix the seed, or /seed random", ZH: "固定种子，或 /seed random"},
    "command_settings": {
        EN: "Steps, cfg, text mode, negative prompt",
        ZH: "步数、cfg、文字模式、负面提示词",
    },
    "command_cancel": {EN: "Cancel your running edit", ZH: "取消正在进行的修改"},
    "command_about": {EN: "Version, image model and limits", ZH: "版本、图像模型和限制"},
    "about": {
        EN: "stepedit {version}, an open-source photo-editing bot.\n"
        "Image model: {model} ({style}).\n"
        "Limits: {quota}; prompts up to {prompt} characters; pictures are scaled to at most "
        "{side} px on the long side; up to {waiting} edits waiting at once.",
        ZH: "stepedit {version}，开源的修图机器人。\n"
        "图像模型：{model}（{style}）。\n"
        "限制：{quota}；提示词最多 {prompt} 个字符；图片长边最多缩放到 {side} 像素；"
        "同时最多 {waiting} 个修改排队。",
    },
    "about_quota": {EN: "{quota} edits a day", ZH: "每天 {quota} 次修改"},
    "about_no_quota": {EN: "no daily limit", ZH: "没有每日次数限制"},
    "btn_reroll": {EN: "🎲 Reroll", ZH: "🎲 重新生成"},
    "btn_undo": {EN: "↩️ Undo", ZH: "↩️ 撤销"},
    "btn_full": {EN: "🖼 Full quality", ZH: "🖼 原图"},
    "btn_full_jpeg": {EN: "🖼 Full quality (JPEG)", ZH: "🖼 原图（JPEG）"},
    "btn_cancel": {EN: "✖️ Cancel", ZH: "✖️ 取消"},
    "btn_compare": {EN: "◐ Compare before / after", ZH: "◐ 前后对比"},
    "caption_compare": {EN: "Before and after: {prompt}", ZH: "修改前后：{prompt}"},
    "compare_before": {EN: "Before", ZH: "修改前"},
    "compare_after": {EN: "After", ZH: "修改后"},
    "compare_not_shown": {
        EN: "Nothing to compare here: this chat never saw the picture this was made from.",
        ZH: "这里无法对比：这个聊天从未显示过原图。",
    },
    "quota": {
        EN: "You have {remaining} of {limit} edits left today (resets at {resets}).",
        ZH: "今天还剩 {remaining}/{limit} 次修改（{resets} 重置）。",
    },
    "quota_unlimited": {
        EN: "You have no daily limit. Edits today: {used}.",
        ZH: "你没有每日次数限制。今天已修改 {used} 次。",
    },
    "seed_fixed": {
        EN: "Seed fixed at {seed}: the same photo and prompt now give the same result. "
        "/seed random switches back.",
        ZH: "种子已固定为 {seed}：相同的照片和要求会得到相同结果。/seed random 恢复随机。",
    },
    "seed_random": {
        EN: "Seed is random: every edit gets a new one.",
        ZH: "种子为随机：每次修改都用新的种子。",
    },
    "seed_usage": {
        EN: "Usage: /seed <0–2147483647> to fix the seed, /seed random for a new one each time.",
        ZH: "用法：/seed <0–2147483647> 固定种子，/seed random 每次随机。",
    },
    "settings_head": {EN: "Your settings:", ZH: "你的设置："},
    "settings_steps": {EN: "• steps: {steps} (1–50)", ZH: "• 步数 steps：{steps}（1–50）"},
    "settings_cfg": {EN: "• cfg: {cfg} (1.0–10.0)", ZH: "• cfg：{cfg}（1.0–10.0）"},
    "settings_text": {EN: "• text mode: {text_mode}", ZH: "• 文字模式：{text_mode}"},
    "settings_negative": {EN: "• negative prompt: {negative}", ZH: "• 负面提示词：{negative}"},
    "settings_seed": {EN: "• seed: {seed}", ZH: "• 种子：{seed}"},
    "settings_size": {
        EN: "• size of new images (/imagine): {size}",
        ZH: "• 新图尺寸（/imagine）：{size}",
    },
    "settings_model": {EN: "• model: {model}", ZH: "• 模型：{model}"},
    "settings_fallback": {
        EN: "• when it is unavailable: {model}",
        ZH: "• 它不可用时：{model}",
    },
    "settings_change": {EN: "Change with {examples}.", ZH: "修改示例：{examples}。"},
    "settings_negative_example": {
        EN: "/settings negative <text>|none",
        ZH: "/settings negative <文字>|none",
    },
    "not_your_settings": {
        EN: "These are someone else's settings. Send /settings for yours.",
        ZH: "这是别人的设置。发送 /settings 查看你自己的。",
    },
    "value_auto": {
        EN: "auto (on when the prompt quotes text)",
        ZH: "自动（要求里有引号文字时开启）",
    },
    "value_on": {EN: "on", ZH: "开"},
    "value_off": {EN: "off", ZH: "关"},
    "value_none": {EN: "none", ZH: "无"},
    "value_random": {EN: "random", ZH: "随机"},
    "negative_ignored": {
        EN: " (only used when cfg > 1.0)",
        ZH: "（仅在 cfg > 1.0 时生效）",
    },
    "cancelled": {EN: "Cancelled. Nothing was charged.", ZH: "已取消，未扣除次数。"},
    "not_your_button": {
        EN: "These buttons are for whoever asked for this edit. To edit the picture yourself, "
        "reply to it.",
        ZH: "这些按钮只属于发起这次修改的人。想自己修改这张图，请回复它。",
    },
    "undo_not_shown": {
        EN: "Back to your picture from before. Only you saw it, so I don't post it here; "
        "what you ask next edits it.",
        ZH: "已回到上一张图。它只有你看过，所以不会在这里公开；你接下来的请求会修改它。",
    },
    "nothing_to_cancel": {
        EN: "Nothing to cancel (an edit the image model already has runs to its end).",
        ZH: "没有可取消的任务（图像模型已在处理的修改会完成）。",
    },
    "forget_confirm": {
        EN: "Delete everything the bot keeps of you: your photos, results, history and "
        "settings? This cannot be undone. (Today's quota stays as it is.)",
        ZH: "删除机器人保存的你的全部数据：照片、结果、历史和设置？此操作无法撤销。"
        "（今天的次数不变。）",
    },
    "forget_done": {
        EN: "Done: your photos, results, {edits} edits and settings are deleted.",
        ZH: "已删除你的照片、结果、{edits} 条修改记录和设置。",
    },
    "forget_kept": {EN: "Nothing was deleted.", ZH: "没有删除任何内容。"},
    "forget_busy": {
        EN: "You have edits running. Wait for them or /cancel them, then /forget again.",
        ZH: "你还有修改在进行中。请等它们完成或用 /cancel 取消，再发送 /forget。",
    },
    "btn_forget_yes": {EN: "🗑 Delete everything", ZH: "🗑 全部删除"},
    "btn_forget_no": {EN: "Keep", ZH: "保留"},
    "command_forget": {
        EN: "Delete your photos, history and settings",
        ZH: "删除你的照片、历史和设置",
    },
    "command_caption": {
        EN: "Meme caption: /caption top | bottom",
        ZH: "加梗图文字：/caption 上 | 下",
    },
    "command_bubble": {
        EN: "Speech bubble: /bubble [left|right] text",
        ZH: "加对话气泡：/bubble 文字",
    },
    "note_options_ignored": {
        EN: "This image model has no {names} option: the edit runs without it.",
        ZH: "这个图像模型没有 {names} 选项：本次修改不使用它。",
    },
    "command_imagine": {
        EN: "A new image from words: /imagine <prompt>",
        ZH: "根据文字生成新图片：/imagine <描述>",
    },
}
