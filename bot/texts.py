"""Every sentence a user reads, in English and Chinese, in one place.

Adapters call `t(key, lang, **params)`; `language_for` picks the language from the platform's hint
and, failing that, from the script of the user's own words.
"""

from __future__ import annotations

import re

from bot.backends.base import Capabilities
from bot.domain import UserSettings
from bot.errors import StepEditError

EN, ZH = "en", "zh"

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

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
    "error_uncharged_cap": {
        EN: "{limit} of your edits today ended without a picture (refused or failed), and each "
        "one still cost the image model a call. Please try again after {resets}.",
        ZH: "你今天已有 {limit} 次修改没有得到图片（被拒绝或失败），每次仍会调用图像模型。"
        "请在 {resets} 之后再试。",
    },
    "error_generic": {
        EN: "Something went wrong on my side. Please try again.",
        ZH: "出了点问题，请再试一次。",
    },
    "error_not_image": {
        EN: "I couldn't read that file as an image. Please send a JPEG, PNG, WebP, GIF, BMP "
        "or TIFF photo.",
        ZH: "无法识别这个文件。请发送 JPEG、PNG、WebP、GIF、BMP 或 TIFF 图片。",
    },
    "error_unsupported_format": {
        EN: "I can't read {format} files yet. Please send the picture as a JPEG, PNG, WebP or "
        "GIF (sending it as a photo rather than a file also works).",
        ZH: "暂不支持 {format} 格式。请以 JPEG、PNG、WebP 或 GIF 格式发送"
        "（或以照片而非文件的方式发送）。",
    },
    "error_file_too_large": {
        EN: "The lossless file is {size_mb} MB, more than the {limit_mb} MB I may send here. "
        "The picture above is the best I can send.",
        ZH: "无损文件有 {size_mb} MB，超过这里允许发送的 {limit_mb} MB。"
        "上面的图片已是能发送的最佳质量。",
    },
    "error_image_too_large": {
        EN: "That file is too large for me to process. Please send a smaller image.",
        ZH: "文件太大，无法处理。请发送小一些的图片。",
    },
    "error_image_too_small": {
        EN: "That image is too small: both sides must be at least {min_side}px.",
        ZH: "图片太小：长和宽都至少需要 {min_side} 像素。",
    },
    "error_image_too_narrow": {
        EN: "That image is too long and narrow: scaled down to {max_side}px its short side "
        "would be under {min_side}px. Crop it a little and send it again.",
        ZH: "图片太细长：缩小到 {max_side} 像素后，短边会小于 {min_side} 像素。请裁剪一下再发送。",
    },
    "error_prompt_empty": {
        EN: "Tell me what to change: add a caption to the photo, or reply to this message "
        "with a description.",
        ZH: "请告诉我要怎么改：给照片加上说明，或回复这条消息写上描述。",
    },
    "error_prompt_too_long": {
        EN: "That description is {length} characters; the limit is {limit}. Please shorten it.",
        ZH: "描述有 {length} 个字符，上限是 {limit}。请缩短一些。",
    },
    "error_setting": {EN: "{field} must be {allowed}.", ZH: "{field} 必须是 {allowed}。"},
    "error_setting_int": {
        EN: "{field} must be a whole number from {low} to {high}.",
        ZH: "{field} 必须是 {low} 到 {high} 之间的整数。",
    },
    "error_setting_number": {
        EN: "{field} must be a number from {low} to {high}.",
        ZH: "{field} 必须是 {low} 到 {high} 之间的数字。",
    },
    "error_setting_switch": {
        EN: "text mode must be on, off or auto.",
        ZH: "文字模式只能是 on、off 或 auto。",
    },
    "error_setting_length": {
        EN: "The negative prompt can be at most {limit} characters.",
        ZH: "负面提示词最多 {limit} 个字符。",
    },
    "error_setting_unknown": {
        EN: "Unknown setting \u201c{field}\u201d. Use steps, cfg, text, negative or seed.",
        ZH: "没有\u201c{field}\u201d这个设置。可用：steps、cfg、text、negative、seed。",
    },
    "error_nothing_to_edit": {
        EN: "There's no photo to edit yet. Send a photo with a caption first.",
        ZH: "还没有可以修改的照片。请先发送一张带说明的照片。",
    },
    "error_unknown_edit": {
        EN: "I can't find that image any more. Send the photo again, please.",
        ZH: "找不到这张图了，请重新发送照片。",
    },
    "error_quota": {
        EN: "You've used all {limit} edits for today. The quota resets at {resets}.",
        ZH: "今天的 {limit} 次修改已用完，将于 {resets} 重置。",
    },
    "error_chat_quota": {
        EN: "This chat has used all {limit} edits for today. They reset at {resets}.",
        ZH: "这个群今天的 {limit} 次修改已用完，将于 {resets} 重置。",
    },
    "error_budget": {
        EN: "The bot has used up today's edits. Edits resume at {resets}; sorry!",
        ZH: "机器人今天的修改额度已用完，将于 {resets} 恢复，抱歉！",
    },
    "error_not_allowed": {
        EN: "Sorry, this bot is private. Ask its operator for access.",
        ZH: "抱歉，这是私人机器人。请联系管理员开通。",
    },
    "error_banned": {
        EN: "You can't use this bot any more.",
        ZH: "你已无法再使用这个机器人。",
    },
    "error_image_expired": {
        EN: "This image has expired (the bot keeps images for a limited time). Please send it "
        "again.",
        ZH: "这张图片已过期（机器人只保存图片一段时间），请重新发送。",
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
    "error_meme_text_empty": {
        EN: "Tell me the words, e.g. /caption top text | bottom text, or /bubble I was wrong.",
        ZH: "请写上要加的文字，例如 /caption 上面的字 | 下面的字，或 /bubble 我错了。",
    },
    "error_meme_text_too_long": {
        EN: "That's too much text: at most {limit} characters per part.",
        ZH: "文字太长了：每部分最多 {limit} 个字符。",
    },
    "error_meme_text_no_glyphs": {
        EN: "I can't draw {dropped}: emoji and some symbols aren't in my font. Try words instead.",
        ZH: "我画不出 {dropped}：字体里没有表情符号和部分符号，请换成文字。",
    },
    "error_meme_text_no_room": {
        EN: "That text doesn't fit on this picture. Try fewer words or a bigger image.",
        ZH: "这张图放不下这么多字，请少写一些或换一张大一点的图。",
    },
    "command_caption": {
        EN: "Meme caption: /caption top | bottom",
        ZH: "加梗图文字：/caption 上 | 下",
    },
    "command_bubble": {
        EN: "Speech bubble: /bubble [left|right] text",
        ZH: "加对话气泡：/bubble 文字",
    },
    "error_nothing_to_undo": {
        EN: "This picture was made from words alone: there is nothing before it to go back to.",
        ZH: "这张图是直接根据文字生成的，没有可以撤销回去的上一步。",
    },
    "error_generation_unsupported": {
        EN: "This image service can't make new images from text, only edit photos. Send a "
        "photo to edit instead. Nothing was charged.",
        ZH: "这个图像服务不能根据文字生成新图片，只能修改照片。请发送一张照片来修改。未扣除次数。",
    },
    "error_setting_size": {
        EN: "The size must be one of: {allowed}.",
        ZH: "尺寸必须是以下之一：{allowed}。",
    },
    "note_options_ignored": {
        EN: "This image model has no {names} option: the edit runs without it.",
        ZH: "这个图像模型没有 {names} 选项：本次修改不使用它。",
    },
    "error_setting_unsupported": {
        EN: "This image model has no {field} setting. /settings shows what it offers.",
        ZH: "这个图像模型没有 {field} 设置。/settings 可查看可用的设置。",
    },
    "error_no_image": {
        EN: "The image model answered in words instead of a picture. Try describing the change "
        "differently. Nothing was charged.",
        ZH: "图像模型只回了文字，没有给出图片。请换一种说法再试。未扣除次数。",
    },
    "command_imagine": {
        EN: "A new image from words: /imagine <prompt>",
        ZH: "根据文字生成新图片：/imagine <描述>",
    },
    "error_admins_only": {EN: "Admins only.", ZH: "仅限管理员。"},
    "error_too_fast": {
        EN: "Slow down a little: at most {limit} drawings, undos and full-quality files a "
        "minute. Try again in a moment.",
        ZH: "请慢一点：每分钟最多 {limit} 次加字、撤销和原图。稍后再试。",
    },
    "error_sent_as_chat": {
        EN: "I edit pictures for people, not for channels or anonymous admins: please send "
        "as yourself (tap your picture next to the message field and choose your own name).",
        ZH: "我只为个人修改图片，不为频道或匿名管理员服务：请以你自己的身份发送（点输入框旁的头像，"
        "选择你自己）。",
    },
    "admin_budget_spent": {
        EN: "The daily budget of {budget} edits is spent; edits pause until {resets}.",
        ZH: "每日 {budget} 次修改的总额度已用完，修改暂停到 {resets}。",
    },
    "admin_spend_spent": {
        EN: "Today's spend on the image model reached the cap of {spend}; edits pause until "
        "{resets}.",
        ZH: "今天在图像模型上的花费已达上限 {spend}，修改暂停到 {resets}。",
    },
    "admin_usage": {
        EN: "Admin commands: /stats · /grant <user id> <n> · /ban <user id> · "
        "/unban <user id> · /quota <user id>",
        ZH: "管理员命令：/stats · /grant <用户id> <次数> · /ban <用户id> · "
        "/unban <用户id> · /quota <用户id>",
    },
    "admin_unknown_user": {
        EN: "No user {who} has used the bot yet.",
        ZH: "用户 {who} 还没有用过这个机器人。",
    },
    "admin_granted": {
        EN: "{who} gets {extra} more edits today.",
        ZH: "{who} 今天多了 {extra} 次修改。",
    },
    "admin_banned": {EN: "{who} is banned.", ZH: "{who} 已被封禁。"},
    "admin_cannot_ban_admin": {
        EN: "{who} is an admin (ADMIN_IDS): admins cannot be banned.",
        ZH: "{who} 是管理员（ADMIN_IDS），不能封禁管理员。",
    },
    "admin_grant_range": {
        EN: "/grant <user id> <n>: n is a whole number from 1 to {most}.",
        ZH: "/grant <用户id> <次数>：次数为 1 到 {most} 的整数。",
    },
    "admin_unbanned": {EN: "{who} may use the bot again.", ZH: "{who} 已解除封禁。"},
    "admin_quota": {
        EN: "{who}: {used} edits today, limit {limit} (+{granted} granted).",
        ZH: "{who}：今天已修改 {used} 次，上限 {limit}（另加 {granted} 次）。",
    },
    "admin_stats": {
        EN: "Today ({day}): {today} edits charged{budget}; {succeeded} delivered, {failed} failed "
        "({rate}% success); median API time {api_ms} ms; spent {spent}{cap}.\n"
        "All time: {total} delivered.\nTop users today: {top}",
        ZH: "今天（{day}）：已计 {today} 次{budget}；成功 {succeeded}，失败 {failed}"
        "（成功率 {rate}%）；API 中位耗时 {api_ms} 毫秒；花费 {spent}{cap}。\n"
        "累计成功 {total} 次。\n今天用得最多：{top}",
    },
    "error_busy_user": {
        EN: "You already have {limit} edits waiting. Please wait for them to finish, or "
        "/cancel them.",
        ZH: "你已有 {limit} 个修改在排队，请等它们完成，或用 /cancel 取消。",
    },
    "error_interrupted": {
        EN: "This edit was interrupted several times, so I gave up on it. Please try again. "
        "Nothing was charged.",
        ZH: "这次修改多次中断，已放弃。请再试一次。未扣除次数。",
    },
    "error_refused": {
        EN: "The image service refused this edit (content rules). Try a different photo or "
        "description. Nothing was charged.",
        ZH: "图像服务因内容规则拒绝了这次修改。请换一张照片或换个描述。未扣除次数。",
    },
    "error_unavailable": {
        EN: "The image service is busy or temporarily unavailable. Please try again in a "
        "minute. Nothing was charged.",
        ZH: "图像服务繁忙或暂时不可用，请稍后再试。未扣除次数。",
    },
    "error_timeout": {
        EN: "The image service took too long to answer. Please try again. Nothing was charged.",
        ZH: "图像服务响应超时，请再试一次。未扣除次数。",
    },
    "error_rejected": {
        EN: "The image service couldn't process this photo or description. Try another "
        "photo or rephrase. Nothing was charged.",
        ZH: "图像服务无法处理这张照片或描述。请换一张照片或换个说法。未扣除次数。",
    },
    "error_rejected_too_large": {
        EN: "The image service says the image is too large. Try a smaller photo. "
        "Nothing was charged.",
        ZH: "图像服务提示图片太大，请换一张小一些的照片。未扣除次数。",
    },
    # Discord's slash commands, their options and the "Edit image" menu and form, as Discord
    # lists them (at most 100 characters each; adapters/discord/commands/ registers the English).
    "discord_edit": {
        EN: "Edit an image: attach it and say what to change",
        ZH: "修改图片：附上图片并说明要改什么",
    },
    "discord_edit_image": {EN: "The image to edit", ZH: "要修改的图片"},
    "discord_edit_prompt": {EN: "What to change", ZH: "要改什么"},
    "discord_edit_seed": {
        EN: "A fixed seed (the same prompt and seed make the same picture)",
        ZH: "固定种子（相同的描述和种子生成相同的图片）",
    },
    "discord_edit_steps": {EN: "Steps (more: slower, finer)", ZH: "步数（越多越慢，越精细）"},
    "discord_edit_cfg": {EN: "How strictly to follow the prompt", ZH: "遵循描述的严格程度"},
    "discord_edit_text_mode": {EN: "Render quoted words as text", ZH: "把引号里的词画成文字"},
    "discord_edit_negative": {
        EN: "What to avoid (needs cfg above 1)",
        ZH: "要避免的内容（需要 cfg 大于 1）",
    },
    "discord_edit_menu": {EN: "Edit image", ZH: "修改图片"},
    "discord_edit_form_prompt": {EN: "What should change?", ZH: "要改什么？"},
    "discord_imagine": {EN: "A new image from your words", ZH: "根据你的文字生成新图片"},
    "discord_caption": {
        EN: "Meme caption: top | bottom, drawn exactly",
        ZH: "表情包文字：上方 | 下方，照原样绘制",
    },
    "discord_caption_text": {EN: "top text | bottom text", ZH: "上方文字 | 下方文字"},
    "discord_bubble": {EN: "A speech bubble with your words", ZH: "带你文字的对话气泡"},
    "discord_bubble_text": {
        EN: "The words (start with left or right to choose the side)",
        ZH: "文字（以 left 或 right 开头可选择气泡方向）",
    },
    "discord_meme_image": {EN: "An image (else your last one)", ZH: "一张图片（否则用你上一张）"},
    "discord_quota": {EN: "How many edits you have left today", ZH: "你今天还剩几次修改"},
    "discord_quota_user": {EN: "Admins: someone else's id", ZH: "管理员：其他用户的 ID"},
    "discord_seed": {
        EN: "Show or fix your seed (a number, or random)",
        ZH: "查看或固定你的种子（一个数字，或 random）",
    },
    "discord_settings": {
        EN: "Your edit settings, with buttons to change them",
        ZH: "你的修改设置，附带修改按钮",
    },
    "discord_help": {EN: "How to use the bot", ZH: "使用说明"},
    "discord_cancel": {EN: "Cancel your edits in this channel", ZH: "取消你在本频道的修改"},
    "discord_forget": {
        EN: "Delete your photos, history and settings",
        ZH: "删除你的照片、记录和设置",
    },
    "discord_stats": {
        EN: "Edits today and in total, top users, budget",
        ZH: "今日和累计修改次数、主要用户、预算",
    },
    "discord_grant": {EN: "Give a user extra edits for today", ZH: "今天给某个用户额外的修改次数"},
    "discord_ban": {EN: "Stop a user from using the bot", ZH: "禁止某个用户使用机器人"},
    "discord_unban": {
        EN: "Let a banned user use the bot again",
        ZH: "允许被禁止的用户重新使用机器人",
    },
}


def language_for(hint: str | None, sample: str = "") -> str:
    """Chinese for a zh-* platform language, or for Chinese words when there is no hint."""
    if hint:
        return ZH if hint.lower().startswith("zh") else EN
    return ZH if _CJK.search(sample) else EN


def t(key: str, lang: str = EN, **params: object) -> str:
    variants = TEXTS[key]
    template = variants.get(lang, variants[EN])
    return template.format(**params)


def error_text(error: StepEditError, lang: str = EN) -> str:
    """The user-facing sentence for any core error, filled with the error's params."""
    try:
        return t(error.code, lang, **error.params)
    except (KeyError, IndexError):  # a param the template needs is missing: say it plainly
        return t("error_generic", lang)


def describe_settings(
    settings: UserSettings, lang: str, offered: Capabilities, models: tuple[str, ...]
) -> str:
    """/settings summary of what the edit backend offers; `settings` has the operator's
    defaults filled in; `models`: the model, and the fallback's if there is one."""
    lines = [t("settings_head", lang)]
    examples = []
    if offered.steps:
        lines.append(t("settings_steps", lang, steps=settings.steps))
        examples.append("/settings steps 12")
    if offered.guidance:
        lines.append(t("settings_cfg", lang, cfg=settings.cfg_scale))
        examples.append("/settings cfg 4")
    if offered.text_mode:
        if settings.text_mode is None:
            text_mode = t("value_auto", lang)
        else:
            text_mode = t("value_on" if settings.text_mode else "value_off", lang)
        lines.append(t("settings_text", lang, text_mode=text_mode))
        examples.append("/settings text on|off|auto")
    if offered.negative_prompt:
        negative = settings.negative_prompt or t("value_none", lang)
        if settings.negative_prompt and (settings.cfg_scale or 1.0) <= 1.0:
            negative += t("negative_ignored", lang)
        lines.append(t("settings_negative", lang, negative=negative))
        examples.append(t("settings_negative_example", lang))
    if offered.seed:
        seed = t("value_random", lang) if settings.seed is None else str(settings.seed)
        lines.append(t("settings_seed", lang, seed=seed))
    if offered.generates:
        lines.append(t("settings_size", lang, size=settings.image_size))
        other = [size for size in offered.generation_sizes if size != settings.image_size]
        examples.append(f"/settings size {other[0] if other else settings.image_size}")
    lines.append(t("settings_model", lang, model=models[0]))
    lines += [t("settings_fallback", lang, model=fallback) for fallback in models[1:]]
    examples.append("/settings reset")
    sep = "、" if lang == ZH else ", "
    return "\n".join(lines) + "\n\n" + t("settings_change", lang, examples=sep.join(examples))
