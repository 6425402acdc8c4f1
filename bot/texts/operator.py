"""The operator's commands and notices (/stats, /grant, /ban, /quota <id>)."""

from __future__ import annotations

from bot.texts.languages import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
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
    # after admin_usage where Telegram Stars can be given back (not on Discord)
    "admin_usage_refund": {EN: " · /refund <charge id>", ZH: " · /refund <付款编号>"},
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
    "admin_quota_bought": {
        EN: " Bought edits left: {bought}, in {packs} pack(s).",
        ZH: "剩余购买次数：{bought}（共 {packs} 个修改包）。",
    },
    "admin_stats": {
        EN: "Today ({day}): {today} edits charged{budget}; {succeeded} delivered, {failed} failed "
        "({rate}% success); median API time {api_ms} ms; spent {spent}{cap}.\n"
        "All time: {total} delivered.\nTop users today: {top}",
        ZH: "今天（{day}）：已计 {today} 次{budget}；成功 {succeeded}，失败 {failed}"
        "（成功率 {rate}%）；API 中位耗时 {api_ms} 毫秒；花费 {spent}{cap}。\n"
        "累计成功 {total} 次。\n今天用得最多：{top}",
    },
}
