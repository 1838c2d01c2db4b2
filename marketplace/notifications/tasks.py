import smtplib

from celery import shared_task

from marketplace.notifications.services import email_send, webhook_deliver, webhook_deliveries_due


@shared_task(
    name="marketplace.notifications.tasks.email_send_task",
    autoretry_for=(OSError, smtplib.SMTPException),
    retry_backoff=30,
    retry_backoff_max=3600,
    max_retries=6,
)
def email_send_task(to: list[str], subject: str, body: str) -> int:
    return email_send(to=to, subject=subject, body=body)


@shared_task(name="marketplace.notifications.tasks.webhook_deliver_task")
def webhook_deliver_task(delivery_id: int) -> str:
    return webhook_deliver(delivery_id=delivery_id)


@shared_task(name="marketplace.notifications.tasks.notifications_sweep_task")
def notifications_sweep_task() -> dict:
    from marketplace.notifications.sweep import notifications_sweep

    sent = notifications_sweep()
    for delivery_id in webhook_deliveries_due():  # deliveries a lost message left behind
        webhook_deliver_task.delay(delivery_id)
    return sent
