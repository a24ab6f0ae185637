package main

import (
	"context"
	"fmt"
	"time"

	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/operator"
)

// mailCallers is how many goroutines send at once: the membership controller's
// workers at the default --concurrent-reconciles.
const mailCallers = operator.DefaultConcurrentReconciles

type mailResult struct {
	pooled, perConnection float64 // mails per second
	pooledConns           int
}

func invitation(i int) (mail.Message, error) {
	return mail.InvitationMail(mail.InvitationData{
		To:                  fmt.Sprintf("user-%d@example.com", i),
		MessageID:           mail.InvitationMessageID(fmt.Sprintf("uid-%d", i), 1),
		CustomerDisplayName: "Bench Customer",
		Role:                "Admin",
		Link:                "http://localhost:8082/invitations/" + fmt.Sprintf("%064d", i),
		ExpiryTime:          time.Now().Add(168 * time.Hour),
	})
}

// runMail sends invitations to a local sink through the operator's sender,
// which keeps its connections open (as in internal/mail's BenchmarkSend), and,
// as the baseline, through a new sender (a new connection) per message.
func (b *bench) runMail(ctx context.Context) (mailResult, error) {
	var r mailResult
	n := b.s.Mails
	msgs := make([]mail.Message, n)
	for i := range msgs {
		m, err := invitation(i)
		if err != nil {
			return r, err
		}
		msgs[i] = m
	}
	sink, err := mailtest.NewServer()
	if err != nil {
		return r, err
	}
	defer sink.Close()

	// The manager's default pool size, with as many callers as the membership
	// controller has workers by default.
	sender, err := mail.NewSMTPSender(mail.Config{Address: sink.Addr(), From: "bench@localhost", TLS: mail.TLSNone})
	if err != nil {
		return r, err
	}
	start := time.Now()
	if err := parallel(ctx, n, mailCallers, func(ctx context.Context, i int) error { return sender.Send(ctx, msgs[i]) }); err != nil {
		return r, err
	}
	r.pooled = float64(n) / time.Since(start).Seconds()
	_ = sender.Close()
	r.pooledConns = sink.Connections()

	start = time.Now()
	err = parallel(ctx, n, mailCallers, func(ctx context.Context, i int) error {
		s, err := mail.NewSMTPSender(mail.Config{Address: sink.Addr(), From: "bench@localhost", TLS: mail.TLSNone, MaxConnections: 1})
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Send(ctx, msgs[i])
	})
	if err != nil {
		return r, err
	}
	r.perConnection = float64(n) / time.Since(start).Seconds()
	return r, nil
}
