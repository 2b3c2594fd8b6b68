"""multi2cap.demo"""
