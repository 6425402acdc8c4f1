"""Discord's own words: slash commands, their options, the Edit image form."""

from __future__ import annotations

from bot.texts.languages import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
    # Discord's slash commands, their options and the "Edit image" menu and form, as Discord
    # lists them (at most 100 characters each; adapters/discord/commands/ registers the English).
    "discord_edit": {
        EN: "Edit an image: attach it and say what to change",
        ZH: "修改图片：附上图片并说明要改什么",
    },
    "discord_edit_image": {EN: "The image to edit", ZH: "要修改的图片"},
    "discord_edit_image_more": {
        EN: "One more image for the same request (used in order)",
        ZH: "同一请求的另一张图片（按顺序使用）",
    },
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
