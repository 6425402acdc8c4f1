"""Selling edits for Telegram Stars: /buy and its invoice, payments, refunds, /paysupport, and
the operator's /refund."""

from __future__ import annotations

from bot.texts.languages import EN, ZH

TEXTS: dict[str, dict[str, str]] = {
    "command_buy": {EN: "Buy more edits with Telegram Stars", ZH: "用 Telegram 星星购买更多次数"},
    "command_paysupport": {EN: "Help with payments and refunds", ZH: "付款与退款帮助"},
    "buy_offer": {
        EN: "{edits} extra edits for {price} ⭐. They are used after your free edits of the day "
        "and never expire. The bot's daily limits for everyone (its budget and spending cap) "
        "still apply: on a busy day they may pause your edits until midnight, bought or not. "
        "Questions and refunds: /paysupport.",
        ZH: "{edits} 次额外修改，{price} ⭐。每天先用免费次数，再用购买的次数，永不过期。"
        "机器人对所有人的每日总额度和花费上限仍然有效：繁忙的日子里，无论是否购买，"
        "修改都可能暂停到午夜。问题与退款：/paysupport。",
    },
    "invoice_title": {EN: "{edits} edits", ZH: "{edits} 次修改"},
    "invoice_description": {
        EN: "{edits} extra edits, used after your free edits of the day; they never expire. "
        "The bot's daily budget and spending cap still apply to everyone.",
        ZH: "{edits} 次额外修改，在每天的免费次数用完后使用，永不过期。"
        "机器人的每日总额度和花费上限仍对所有人有效。",
    },
    "invoice_label": {EN: "{edits} edits", ZH: "{edits} 次修改"},
    "error_not_selling": {EN: "This bot doesn't sell edits.", ZH: "这个机器人不出售修改次数。"},
    "error_nothing_to_buy": {
        EN: "You have no daily limit: there is nothing to buy.",
        ZH: "你没有每日次数限制，无需购买。",
    },
    "error_buy_private": {
        EN: "Send /buy to me in a private chat.",
        ZH: "请在与我的私聊中发送 /buy。",
    },
    "error_offer_changed": {
        EN: "This offer has changed since the invoice was sent: send /buy for the current one.",
        ZH: "发出账单后价格或次数已变：请发送 /buy 获取当前的报价。",
    },
    "checkout_declined": {EN: "This purchase can't be made.", ZH: "无法完成这次购买。"},
    "paid": {
        EN: "Thank you! {edits} edits were added: you have {left} bought edits. They are used "
        "after your free edits each day and never expire.",
        ZH: "谢谢！已加入 {edits} 次修改：你现在有 {left} 次购买的修改，"
        "在每天的免费次数用完后使用，永不过期。",
    },
    "payment_refunded": {
        EN: "Your payment of {stars} ⭐ was refunded, and the {taken} edits it had left were "
        "taken back. Bought edits left: {left}.",
        ZH: "你支付的 {stars} ⭐ 已退款，其剩余的 {taken} 次修改已收回。剩余购买次数：{left}。",
    },
    "paysupport": {
        EN: "Questions about a payment, or a refund: {contact}.\n"
        "A pack none of whose edits was used can be refunded in full: write to {contact} with "
        "the date of your payment. Once an edit of it was used, a pack is not refunded. If "
        "Telegram refunds a payment itself, the edits of it you have not used are taken back. "
        "Bought edits never expire.",
        ZH: "付款问题或退款：{contact}。\n"
        "一个修改包只要还没用过任何一次，就可以全额退款：请联系 {contact} 并注明付款日期。"
        "用过之后不再退款。如果 Telegram 自行退款，该包中未使用的次数会被收回。"
        "购买的次数永不过期。",
    },
    "error_quota_buy": {
        EN: "You've used all {limit} edits for today. The quota resets at {resets}; to edit "
        "more now, buy extra edits with /buy.",
        ZH: "今天的 {limit} 次修改已用完，将于 {resets} 重置；"
        "想现在继续修改，可以用 /buy 购买额外次数。",
    },
    "quota_bought": {
        EN: "\nBought edits left: {bought} (used after the free ones; they never expire).",
        ZH: "\n剩余购买次数：{bought}（免费次数用完后使用，永不过期）。",
    },
    "forget_payments_kept": {
        EN: " Your payment records stay: refunds and Telegram's rules need them.",
        ZH: "你的付款记录会保留：退款和 Telegram 的规定需要它们。",
    },
    "admin_stats_stars": {EN: "\nStars earned today: {stars} ⭐.", ZH: "\n今天收入：{stars} ⭐。"},
    "admin_refund_usage": {
        EN: "/refund <charge id>: the payment's telegram_payment_charge_id.",
        ZH: "/refund <付款编号>：该付款的 telegram_payment_charge_id。",
    },
    "admin_refund_unknown": {EN: "No payment {charge} is known.", ZH: "没有付款 {charge}。"},
    "admin_refund_already": {
        EN: "Payment {charge} was refunded already.",
        ZH: "付款 {charge} 已经退过款了。",
    },
    "admin_refund_used": {
        EN: "Payment {charge} is not refunded: {used} of its {bought} edits were used.",
        ZH: "付款 {charge} 不能退款：其 {bought} 次修改中已用了 {used} 次。",
    },
    "admin_refunded": {
        EN: "Refunded {stars} ⭐ to {who}; the pack's {edits} edits are taken back.",
        ZH: "已向 {who} 退款 {stars} ⭐，该包的 {edits} 次修改已收回。",
    },
    "admin_refund_failed": {
        EN: "Telegram refused the refund of {charge} ({reason}); nothing changed.",
        ZH: "Telegram 拒绝了 {charge} 的退款（{reason}），没有任何改变。",
    },
    "admin_refund_unsure": {
        EN: "Telegram did not answer the refund of {charge}: it may have gone through. The "
        "pack's edits are taken back; send /refund {charge} again to make sure the Stars go back.",
        ZH: "Telegram 没有回应 {charge} 的退款，可能已经完成。该套餐的次数已收回；"
        "请再发送 /refund {charge} 以确保星星已退回。",
    },
}
