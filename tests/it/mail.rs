//! The `Mailer` contract: SMTP against a real server (aiosmtpd) and the `.eml` outbox.

use openrun::mail::MailConfig;
use openrun::mail::{self, Mailer};

use crate::helpers::{SmtpServer, free_port, random_name};

async fn send_one(mailer: &dyn Mailer) {
    let from = "Shop <no-reply@shop.example>".parse().unwrap();
    let message = mail::verification_message(
        &from,
        "new.member@example.co.kr",
        "https://shop.example/v1/members/verify?token=abc",
    )
    .unwrap();
    mailer.send(message).await.unwrap();
}

fn check(raw: &str) {
    let unfolded = raw
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        unfolded.contains("From: Shop <no-reply@shop.example>"),
        "{unfolded}"
    );
    assert!(
        unfolded.contains("To: new.member@example.co.kr"),
        "{unfolded}"
    );
    assert!(
        unfolded.contains("Subject: Confirm your e-mail address"),
        "{unfolded}"
    );
    assert!(
        unfolded.contains("https://shop.example/v1/members/verify?token=abc"),
        "{unfolded}"
    );
}

#[tokio::test]
async fn smtp_delivers_to_a_real_server() {
    let server = SmtpServer::start().await;
    let config = MailConfig {
        smtp_url: Some(format!("smtp://127.0.0.1:{}", server.port).into()),
        from: "x@y.example".parse().unwrap(),
        outbox_dir: "unused".into(),
    };
    send_one(&*mail::from_config(&config).unwrap()).await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    check(&messages[0]);
}

#[tokio::test]
async fn the_outbox_gets_an_eml_file() {
    let dir = std::env::temp_dir()
        .join(random_name("openrun_outbox_"))
        .join("nested");
    let config = MailConfig {
        smtp_url: None,
        from: "x@y.example".parse().unwrap(),
        outbox_dir: dir.clone(),
    };
    send_one(&*mail::from_config(&config).unwrap()).await;
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().unwrap(), "eml");
    check(&std::fs::read_to_string(&files[0]).unwrap());
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_an_error() {
    let port = free_port();
    let config = MailConfig {
        smtp_url: Some(format!("smtp://127.0.0.1:{port}").into()),
        from: "x@y.example".parse().unwrap(),
        outbox_dir: "unused".into(),
    };
    let from = "x@y.example".parse().unwrap();
    let message = mail::verification_message(&from, "a@b.example", "https://l").unwrap();
    assert!(
        mail::from_config(&config)
            .unwrap()
            .send(message)
            .await
            .is_err()
    );
}
