"""Why something was refused or failed, one sentence per error code (bot/errors.py)."""

from __future__ import annotations

from bot.texts.languages import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
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
    "error_too_many_pictures": {
        EN: "That's {count} pictures; I can take at most {most} in one request. "
        "Send fewer and I'll edit them.",
        ZH: "一共 {count} 张图片；一次请求最多 {most} 张。请少发几张，我再来修改。",
    },
    "error_mixed_album": {
        EN: "That album mixes pictures with other files. Send only pictures (photos or image "
        "files) and I'll edit them; nothing was charged.",
        ZH: "这个相册里混有图片以外的文件。请只发送图片（照片或图片文件），我再来修改；"
        "没有扣除次数。",
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
    "error_setting_unsupported": {
        EN: "This image model has no {field} setting. /settings shows what it offers.",
        ZH: "这个图像模型没有 {field} 设置。/settings 可查看可用的设置。",
    },
    "error_no_image": {
        EN: "The image model answered in words instead of a picture. Try describing the change "
        "differently. Nothing was charged.",
        ZH: "图像模型只回了文字，没有给出图片。请换一种说法再试。未扣除次数。",
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
}
