//! The `dns` kind: one question over UDP (over TCP when the answer comes
//! back truncated), judged by the rcode and, if asked, by a record of the
//! answer.
//!
//! The query is encoded once per check; a probe writes a fresh random ID
//! into it. Over UDP the socket is connected, so an ICMP port unreachable
//! reads as "refused" and only the endpoint's datagrams arrive; a reply
//! with another ID or question is ignored (a late answer to an earlier
//! probe, or a spoofer's guess) and the probe keeps waiting under its
//! deadline.

use std::io;
use std::net::SocketAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query as Question};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::classify::classify;
use super::{EndpointProber, ProbeOutcome};
use crate::model::{DnsCheck, rcode_name};

/// A UDP answer without EDNS is at most 512 bytes; room for a server that
/// sends more anyway.
const UDP_BUFFER: usize = 4096;

/// The question of a check, encoded once.
#[derive(Debug)]
pub(super) struct Query {
    pub(super) spec: DnsCheck,
    /// The query message with ID 0.
    wire: Vec<u8>,
}

impl Query {
    pub(super) fn new(spec: &DnsCheck) -> Query {
        // Absolute, as the answer's question will be.
        let mut spec = spec.clone();
        spec.name.set_fqdn(true);
        let mut m = Message::new(0, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = spec.recursion_desired;
        m.add_query(Question::query(spec.name.clone(), spec.qtype));
        // A name and a type always encode.
        let wire = m.to_vec().unwrap_or_default();
        Query { spec, wire }
    }
}

impl EndpointProber {
    /// One DNS probe.
    pub(super) async fn dns(&self, q: &Query) -> (ProbeOutcome, String) {
        let id: u16 = rand::random();
        let mut wire = q.wire.clone();
        if wire.len() < 12 {
            return (ProbeOutcome::Local, "the query did not encode".into());
        }
        wire[..2].copy_from_slice(&id.to_be_bytes());
        let answer = match self.udp(&wire, id, q).await {
            Ok(m) if m.metadata.truncation => match self.tcp(&wire, id, q).await {
                Ok(m) => m,
                Err(verdict) => return verdict,
            },
            Ok(m) => m,
            Err(verdict) => return verdict,
        };
        judge(&q.spec, &answer)
    }

    async fn udp(
        &self,
        wire: &[u8],
        id: u16,
        q: &Query,
    ) -> Result<Message, (ProbeOutcome, String)> {
        let local: SocketAddr = match (self.source, self.addr) {
            (Some(s), _) => SocketAddr::new(s, 0),
            (None, SocketAddr::V4(_)) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            (None, SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let io = |e: io::Error| classify(&e, &self.addr.ip().to_string());
        let sock = UdpSocket::bind(local).await.map_err(io)?;
        sock.connect(self.addr).await.map_err(io)?;
        sock.send(wire).await.map_err(io)?;
        let mut buf = vec![0u8; UDP_BUFFER];
        loop {
            let n = sock.recv(&mut buf).await.map_err(io)?;
            // Another probe's late answer, or a guess: not ours.
            if n < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                continue;
            }
            match answer_to(&buf[..n], id, q) {
                Some(m) => return Ok(m),
                None => continue,
            }
        }
    }

    async fn tcp(
        &self,
        wire: &[u8],
        id: u16,
        q: &Query,
    ) -> Result<Message, (ProbeOutcome, String)> {
        let mut stream = self.connect_tcp().await?;
        let io = |e: io::Error| classify(&e, &self.addr.ip().to_string());
        let len = u16::try_from(wire.len())
            .map_err(|_| (ProbeOutcome::Local, "query too long".to_string()))?;
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend(len.to_be_bytes());
        framed.extend_from_slice(wire);
        stream.write_all(&framed).await.map_err(io)?;
        let len = stream.read_u16().await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.map_err(io)?;
        answer_to(&buf, id, q).ok_or_else(|| {
            (
                ProbeOutcome::Protocol,
                "the answer over TCP is not a response to the question".to_string(),
            )
        })
    }
}

/// The message, if it is a response to this question with this ID.
fn answer_to(bytes: &[u8], id: u16, q: &Query) -> Option<Message> {
    let m = Message::from_vec(bytes).ok()?;
    let asked = m.queries.first()?;
    (m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && asked.name() == &q.spec.name
        && asked.query_type() == q.spec.qtype)
        .then_some(m)
}

/// Pass or fail, with the reason operators read.
fn judge(spec: &DnsCheck, m: &Message) -> (ProbeOutcome, String) {
    let rcode = m.metadata.response_code;
    if rcode != spec.rcode {
        return (
            ProbeOutcome::Status,
            format!(
                "rcode {} (expected {})",
                rcode_name(rcode),
                rcode_name(spec.rcode)
            ),
        );
    }
    let Some(want) = &spec.expect_answer else {
        return (ProbeOutcome::Success, format!("ok ({})", rcode_name(rcode)));
    };
    let got: Vec<_> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == spec.qtype)
        .map(|r| &r.data)
        .collect();
    if got.contains(&want) {
        return (
            ProbeOutcome::Success,
            format!("ok ({}, {want})", rcode_name(rcode)),
        );
    }
    let shown: Vec<String> = got.iter().take(4).map(|d| d.to_string()).collect();
    let more = got.len().saturating_sub(shown.len());
    (
        ProbeOutcome::Body,
        match (shown.is_empty(), more) {
            (true, _) => format!("no {} answer (expected {want})", spec.qtype),
            (false, 0) => format!("answer {} (expected {want})", shown.join(", ")),
            (false, n) => format!("answer {} and {n} more (expected {want})", shown.join(", ")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

    fn spec(expect: Option<&str>) -> DnsCheck {
        DnsCheck {
            name: Name::from_ascii("www.example.").unwrap(),
            qtype: RecordType::A,
            rcode: ResponseCode::NoError,
            expect_answer: expect.map(|a| RData::A(A(a.parse().unwrap()))),
            recursion_desired: false,
        }
    }

    fn response(rcode: ResponseCode, addrs: &[&str]) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let name = Name::from_ascii("WWW.example.").unwrap();
        m.add_query(Question::query(name.clone(), RecordType::A));
        for a in addrs {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A(a.parse().unwrap())),
            ));
        }
        m
    }

    #[test]
    fn rcode_then_answer_decide() {
        let ok = judge(&spec(None), &response(ResponseCode::NoError, &[]));
        assert_eq!(ok, (ProbeOutcome::Success, "ok (NOERROR)".into()));
        let servfail = judge(&spec(None), &response(ResponseCode::ServFail, &[]));
        assert_eq!(
            servfail,
            (
                ProbeOutcome::Status,
                "rcode SERVFAIL (expected NOERROR)".into()
            )
        );
        let found = judge(
            &spec(Some("192.0.2.1")),
            &response(ResponseCode::NoError, &["192.0.2.9", "192.0.2.1"]),
        );
        assert_eq!(
            found,
            (ProbeOutcome::Success, "ok (NOERROR, 192.0.2.1)".into())
        );
        let missing = judge(
            &spec(Some("192.0.2.1")),
            &response(ResponseCode::NoError, &["192.0.2.10"]),
        );
        assert_eq!(
            missing,
            (
                ProbeOutcome::Body,
                "answer 192.0.2.10 (expected 192.0.2.1)".into()
            )
        );
        let empty = judge(
            &spec(Some("192.0.2.1")),
            &response(ResponseCode::NoError, &[]),
        );
        assert_eq!(
            empty,
            (
                ProbeOutcome::Body,
                "no A answer (expected 192.0.2.1)".into()
            )
        );
    }

    #[test]
    fn only_a_response_to_the_question_counts() {
        let q = Query::new(&spec(None));
        let bytes = response(ResponseCode::NoError, &[]).to_vec().unwrap();
        assert!(
            answer_to(&bytes, 7, &q).is_some(),
            "names match without regard to case"
        );
        assert!(answer_to(&bytes, 8, &q).is_none(), "another ID");
        assert!(
            answer_to(&q.wire, 0, &q).is_none(),
            "a query, not a response"
        );
        assert!(answer_to(&bytes[..5], 7, &q).is_none(), "truncated garbage");
    }
}
