# ruff: noqa: E501  (hand-written text tables read better unwrapped)
"""Hand-written, illustrative customer-support exchanges for a fictional online shop.

Like the Bitext corpus the framework is benchmarked on, replies use {{Placeholder}} slots instead of
real names, numbers or links.
"""

# intent, category, customer messages, agent reply
INTENTS = [
    (
        "cancel_order",
        "ORDER",
        [
            "I want to cancel my order",
            "how can I cancel order {{Order Number}}?",
            "please cancel the purchase I made yesterday",
            "can u cancel my order pls",
            "I need to cancel an order I placed by mistake",
            "cancel my last order",
            "is it possible to cancel an order that has not shipped?",
            "help me cancel order {{Order Number}}",
        ],
        'I can help you cancel your order. Please go to {{Account Page}} > My Orders, select the order and choose "Cancel order". If it has already shipped, you can return it instead once it arrives. Is there anything else I can help with?',
    ),
    (
        "track_order",
        "ORDER",
        [
            "where is my order?",
            "track order {{Order Number}}",
            "my package hasn't arrived yet",
            "when will my parcel arrive",
            "can you tell me the status of my delivery?",
            "i'd like to track my shipment",
            "how do I check where my order is",
            "order still not here, where is it",
        ],
        "You can track your order at {{Tracking Page}} with your order number. Deliveries usually arrive within {{Delivery Days}} working days of dispatch. If the tracking has not updated for 3 days, reply here and I will look into it.",
    ),
    (
        "get_refund",
        "REFUND",
        [
            "I want a refund",
            "how do I get my money back?",
            "can I get a refund for order {{Order Number}}",
            "refund please, the item was broken",
            "i returned an item, when do i get my refund",
            "request refund",
            "how long do refunds take?",
            "I'd like to be reimbursed for my purchase",
        ],
        "I'm sorry the purchase didn't work out. Once we receive the returned item, refunds go back to your original payment method within {{Refund Days}} business days. You can follow the status at {{Account Page}} > Refunds.",
    ),
    (
        "change_shipping_address",
        "SHIPPING_ADDRESS",
        [
            "I need to change my delivery address",
            "can I update the shipping address for order {{Order Number}}?",
            "wrong address on my order",
            "how to change address after ordering",
            "ship to a different address please",
            "I moved, need to update my address",
            "edit shipping address",
            "my order is going to my old address",
        ],
        'You can change the shipping address while the order has not been dispatched: open {{Account Page}} > My Orders, choose the order and select "Edit address". If it has already shipped, contact the carrier at {{Carrier Phone Number}} to redirect it.',
    ),
    (
        "recover_password",
        "ACCOUNT",
        [
            "I forgot my password",
            "can't log in to my account",
            "reset password",
            "how do I recover my password?",
            "password not working help",
            "i need a new password",
            "locked out of my account",
            "how to reset my login",
        ],
        'No problem! Click "Forgot password" on the sign-in page at {{Login Page}} and enter your email address. We will send you a link to set a new password; it is valid for 24 hours. Check your spam folder if it does not arrive.',
    ),
    (
        "delete_account",
        "ACCOUNT",
        [
            "delete my account",
            "how can I close my account?",
            "I want to remove my profile",
            "please erase my account and data",
            "close my customer account",
            "how to delete account permanently",
            "I don't want an account anymore",
            "unsubscribe and delete my account",
        ],
        "I'm sorry to see you go. You can delete your account at {{Account Page}} > Privacy > Delete account. Deletion is permanent and removes your order history. If you only want fewer emails, you can change your preferences instead.",
    ),
    (
        "payment_issue",
        "PAYMENT",
        [
            "my payment was declined",
            "I can't pay for my order",
            "card not accepted",
            "payment failed but money was taken",
            "why was I charged twice?",
            "problem with payment",
            "the checkout won't accept my card",
            "payment error at checkout",
        ],
        "I'm sorry you had trouble paying. Please check that the card details and billing address match your bank's records. If you were charged but have no order confirmation, the amount is released within {{Release Days}} days. You can also call us at {{Customer Support Phone Number}}.",
    ),
    (
        "check_invoice",
        "INVOICE",
        [
            "where can I find my invoice?",
            "I need an invoice for order {{Order Number}}",
            "send me the invoice please",
            "download invoice",
            "can I get a receipt for my purchase",
            "how do I get a VAT invoice",
            "invoice missing",
            "need a copy of my bill",
        ],
        "You can download your invoice from {{Account Page}} > My Orders > Invoice. Invoices are available once the order has shipped. If you need a company name or VAT number added, reply with the details and I will update it.",
    ),
    (
        "contact_human_agent",
        "CONTACT",
        [
            "I want to talk to a person",
            "can I speak with a human?",
            "connect me to an agent",
            "real person please",
            "I need to speak to customer service",
            "transfer me to a human agent",
            "is there someone I can call?",
            "talk to support staff",
        ],
        "Of course. You can reach our team by phone at {{Customer Support Phone Number}} during {{Customer Support Hours}}, or use the live chat at {{Website URL}}. I can also note your question now so the agent has the details.",
    ),
    (
        "newsletter_subscription",
        "NEWSLETTER",
        [
            "unsubscribe me from the newsletter",
            "how do I stop your emails?",
            "I want to subscribe to your newsletter",
            "stop sending me promotions",
            "sign me up for offers",
            "too many emails, unsubscribe",
            "change my email preferences",
            "how to join the mailing list",
        ],
        'You can manage your newsletter subscription at {{Account Page}} > Email preferences, or use the "Unsubscribe" link at the bottom of any email. Changes take effect within 48 hours.',
    ),
    (
        "delivery_options",
        "DELIVERY",
        [
            "what delivery options do you have?",
            "do you offer express shipping?",
            "can I get next day delivery",
            "shipping methods",
            "do you deliver on weekends?",
            "how much is shipping",
            "is there free delivery",
            "what are my shipping choices",
        ],
        "We offer standard delivery ({{Delivery Days}} working days) and express delivery (next working day if ordered before {{Cutoff Time}}). Standard delivery is free for orders over {{Free Shipping Threshold}}. You will see all options and prices at checkout.",
    ),
    (
        "complaint",
        "FEEDBACK",
        [
            "I want to make a complaint",
            "your service is terrible",
            "I'm unhappy with my order",
            "file a complaint about the delivery",
            "the product I got is not what I ordered",
            "I am very disappointed",
            "how do I complain?",
            "poor service, not happy",
        ],
        "I'm sorry about your experience, and thank you for telling us. Please share your order number and what went wrong, and I will make sure it is resolved. You can also submit a formal complaint at {{Complaints Page}}; we reply within {{Response Days}} days.",
    ),
    (
        "return_item",
        "REFUND",
        [
            "how do I return an item?",
            "I want to send something back",
            "return policy",
            "can I return a product I used once",
            "start a return for order {{Order Number}}",
            "what is your return window",
            "item doesn't fit, return it",
            "i need to return a gift",
        ],
        "You can return most items within {{Return Window}} days of delivery. Start a return at {{Returns Page}}, print the label and drop the parcel at any {{Carrier}} point. Once we receive it, we will process your refund or exchange.",
    ),
    (
        "change_order",
        "ORDER",
        [
            "can I change my order?",
            "add an item to order {{Order Number}}",
            "I ordered the wrong size",
            "modify my order",
            "change the colour of my order",
            "swap an item in my order",
            "edit the items in my order",
            "update quantity in my order",
        ],
        "If your order has not been dispatched, you can change it at {{Account Page}} > My Orders > Edit order. Once it has shipped, it cannot be changed, but you can return the item and place a new order.",
    ),
    (
        "payment_methods",
        "PAYMENT",
        [
            "what payment methods do you accept?",
            "can I pay with PayPal?",
            "do you take credit cards",
            "is cash on delivery possible",
            "can I pay in instalments?",
            "which cards are accepted",
            "pay by bank transfer?",
            "accepted ways to pay",
        ],
        "We accept major credit and debit cards, PayPal and {{Other Payment Methods}}. Instalment payments are available at checkout for orders over {{Instalment Threshold}}. Cash on delivery is not available.",
    ),
    (
        "registration_problems",
        "ACCOUNT",
        [
            "I can't create an account",
            "sign up not working",
            "registration error",
            "it says my email is already registered",
            "problem registering",
            "can't make a new account",
            "signup page gives an error",
            "why can't I register",
        ],
        'Sorry about that. If the email is already registered, use "Forgot password" at {{Login Page}} to get back in. Otherwise, try another browser or clear your cache. If the error continues, send me the message you see and I will check it.',
    ),
    (
        "check_cancellation_fee",
        "CANCELLATION_FEE",
        [
            "is there a fee to cancel?",
            "do I pay anything if I cancel my order",
            "cancellation charges?",
            "how much does it cost to cancel",
            "will I be charged for cancelling",
            "cancellation fee for subscription",
            "is cancelling free",
            "what are the cancellation costs",
        ],
        "Cancelling an order before it ships is free. For subscriptions, there is no fee if you cancel before the next billing date; after that, the current period is charged. Details are in our terms at {{Terms Page}}.",
    ),
    (
        "review",
        "FEEDBACK",
        [
            "how do I leave a review?",
            "I want to write a review",
            "where can I rate a product",
            "give feedback on my purchase",
            "can I review the seller",
            "post a product review",
            "rate my order",
            "how to share my opinion on a product",
        ],
        'Thank you for wanting to share your opinion! Go to {{Account Page}} > My Orders, choose the product and click "Write a review". Reviews appear after a short check, usually within 48 hours.',
    ),
]


# Politeness and noise variants, as Bitext adds language variation to its seed messages.
VARIANTS = ["hi, {m}", "{m}, thanks", "hello! {m}?", "{m} asap"]


def records() -> list[dict]:
    out = []
    for i, (intent, category, messages, reply) in enumerate(INTENTS):
        variants = [v.format(m=m.rstrip("?")) for v, m in zip(VARIANTS, messages, strict=False)]
        for j, message in enumerate(messages + variants):
            out.append(
                # an intent's messages share one reply: they stay in one split, so evaluation never asks for a
                # reply seen in training
                {
                    "question": message,
                    "answer": reply,
                    "intent": intent,
                    "category": category,
                    "group": intent,
                    "id": f"sample-cs-{i:02d}-{j:02d}",
                }
            )
    return out
